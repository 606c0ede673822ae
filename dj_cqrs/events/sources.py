"""Model event sources: events derived from a model's instances, each ``(name, key)`` once.

``register_source(Order, source)`` runs ``source(order)`` for every saved ``Order`` (``post_save``,
in the transaction of the save, so its events commit or roll back with the change) and for every
instance when ``manage.py cqrs_event_sources`` runs (periodically, for events that depend on time:
"challenge ends in 2 days"). ``source`` yields :func:`dj_cqrs.events.event` specs; an event whose
``(name, key)`` was emitted before by a source is not emitted again (table
``dj_cqrs_event_source``, unique ``(name, key)``, written in the same transaction as the event).
A source that raises makes the save fail, as any ``post_save`` receiver does; the command reports
the instance and carries on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.apps import apps
from django.db import models, transaction
from django.db.models.signals import post_save
from django.utils import timezone

from dj_cqrs.events.emitting import EventSpec, emit_spec, new_event_id
from dj_cqrs.events.once import insert_once

Source = Callable[[Any], Iterable[EventSpec]]

_sources: dict[type[models.Model], list[Source]] = {}


def register_source(model: type[models.Model], source: Source) -> None:
    """Run ``source(instance)`` for each saved instance of ``model`` (see the module docstring)."""
    if not callable(source):
        raise TypeError(f"an event source must be callable, got {source!r}")
    registered = _sources.setdefault(model, [])
    if source not in registered:
        registered.append(source)
    post_save.connect(_on_save, sender=model, weak=False, dispatch_uid=f"dj_cqrs_event_source:{model._meta.label}")


def unregister_sources(model: type[models.Model]) -> None:
    """Forget ``model``'s sources (tests)."""
    _sources.pop(model, None)
    post_save.disconnect(sender=model, dispatch_uid=f"dj_cqrs_event_source:{model._meta.label}")


def sources_of(model: type[models.Model]) -> list[Source]:
    return list(_sources.get(model, ()))


def source_models() -> list[type[models.Model]]:
    """The models with sources, in registration order."""
    return [model for model, sources in _sources.items() if sources]


def _on_save(sender: type, instance: Any, using: str, raw: bool = False, **kwargs: Any) -> None:
    if raw:  # loaddata: fixtures are not events
        return
    run_instance(instance, using)


def run_instance(instance: Any, using: str) -> tuple[int, int]:
    """Run ``instance`` through its model's sources, in one transaction on ``using``; return
    ``(emitted, already emitted before)``."""
    emitted = skipped = 0
    with transaction.atomic(using=using, savepoint=False):
        for source in _sources.get(type(instance), ()):
            for spec in source(instance) or ():
                if not isinstance(spec, EventSpec):
                    raise TypeError(
                        f"event source {getattr(source, '__qualname__', source)!r} yielded {spec!r}: yield"
                        " dj_cqrs.events.event(name, key, data)"
                    )
                event_id = new_event_id()
                if _first_time(using, spec, event_id):
                    emit_spec(spec, using=using, event_id=event_id)
                    emitted += 1
                else:
                    skipped += 1
    return emitted, skipped


def _first_time(using: str, spec: EventSpec, event_id: str) -> bool:
    model = apps.get_model("dj_cqrs", "SourceEmission")
    values = {"name": spec.name, "key": spec.key, "event_id": event_id, "emitted_at": timezone.now()}
    return insert_once(using, model, values)


__all__ = ["register_source", "run_instance", "source_models", "sources_of", "unregister_sources"]
