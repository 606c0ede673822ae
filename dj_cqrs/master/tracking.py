"""Tracked-field change capture (``CQRS_TRACKED_FIELDS`` → ``previous_data``).

For tracked models a snapshot of the tracked attributes is taken when an instance is initialised
(``post_init``) and again after each save; ``previous_data`` holds ``{field_name: old_value}`` for
the fields that changed, JSON-safe, with foreign keys under the field name (not ``*_id``).
On create it holds ``None`` for every tracked field whose value is not None, foreign keys under
their ``*_id`` attribute name (as django-cqrs sends them). What a save captured is what
``get_tracked_fields_data()`` returns until the next save.
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models.signals import post_init

from dj_cqrs.constants import ALL_BASIC_FIELDS
from dj_cqrs.encoding import to_json_value
from dj_cqrs.master.hooks import overrides

SNAPSHOT_ATTR = "_cqrs_tracked_snapshot"
TRACKED_META_ATTR = "_cqrs_tracked_attnames"
#: ``previous_data`` captured by the last save of an instance.
CAPTURED_ATTR = "_cqrs_tracked_fields_data"


def tracked_fields(model: type[models.Model]) -> list[tuple[str, str]]:
    """``[(field_name, attname)]`` of the tracked fields of ``model`` ([] when tracking is off)."""
    cached = model.__dict__.get(TRACKED_META_ATTR)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    spec = getattr(model, "CQRS_TRACKED_FIELDS", None)
    result: list[tuple[str, str]] = []
    if spec:
        concrete = {f.name: f for f in model._meta.concrete_fields}
        if spec == ALL_BASIC_FIELDS:
            names = [n for n in concrete if n != "cqrs_updated"]
        else:
            names = [n for n in spec if n in concrete]
        result = [(n, concrete[n].attname) for n in names]
    setattr(model, TRACKED_META_ATTR, result)
    return result


def _snapshot(instance: models.Model, fields: list[tuple[str, str]]) -> dict[str, Any]:
    data = instance.__dict__
    snapshot = {attname: data.get(attname) for _, attname in fields}
    for attname, value in snapshot.items():
        if _is_expression(value):
            # Not written by the save (update_fields left it out): the last known value stays.
            snapshot[attname] = (data.get(SNAPSHOT_ATTR) or {}).get(attname)
    return snapshot


def _on_post_init(sender: type[models.Model], instance: models.Model, **kwargs: Any) -> None:
    fields = tracked_fields(sender)
    if fields:
        instance.__dict__[SNAPSHOT_ATTR] = _snapshot(instance, fields)


def install(model: type[models.Model]) -> None:
    """Start tracking for ``model`` if it declares ``CQRS_TRACKED_FIELDS``."""
    if TRACKED_META_ATTR in model.__dict__:
        delattr(model, TRACKED_META_ATTR)
    if getattr(model, "CQRS_TRACKED_FIELDS", None):
        post_init.connect(_on_post_init, sender=model, weak=False, dispatch_uid=f"dj_cqrs_track_{id(model)}")


def changes(instance: models.Model, *, created: bool) -> dict[str, Any] | None:
    """``previous_data`` for the save that just happened (None when tracking is off)."""
    fields = tracked_fields(type(instance))
    if not fields:
        return None
    data = instance.__dict__
    if created:
        return {attname: None for _, attname in fields if data.get(attname) is not None}
    before = data.get(SNAPSHOT_ATTR)
    if before is None:
        return {}
    result: dict[str, Any] = {}
    for name, attname in fields:
        old = before.get(attname)
        new = data.get(attname)
        if _is_expression(new):
            # A pending F() expression: the value certainly changes.
            result[name] = to_json_value(old)
        elif old != new:
            result[name] = to_json_value(old)
    return result


def captured(instance: models.Model) -> dict[str, Any] | None:
    """What the last save of ``instance`` captured (None before its first save)."""
    return instance.__dict__.get(CAPTURED_ATTR)  # type: ignore[no-any-return]


def remember(instance: models.Model, previous: dict[str, Any] | None) -> dict[str, Any] | None:
    """Keep what a save captured for ``get_tracked_fields_data()``; return the ``previous_data``
    to send: the model's own ``get_tracked_fields_data()`` when it overrides it."""
    if previous is not None:
        instance.__dict__[CAPTURED_ATTR] = previous
    if overrides(type(instance), "get_tracked_fields_data"):
        return instance.get_tracked_fields_data()  # type: ignore[attr-defined,no-any-return]
    return previous


def all_values(instance: models.Model) -> dict[str, Any] | None:
    """Every tracked value as it is now (``bulk_update`` sends these as ``previous_data``)."""
    fields = tracked_fields(type(instance))
    if not fields:
        return None
    data = instance.__dict__
    return {name: to_json_value(data.get(attname)) for name, attname in fields}


def reset(instance: models.Model) -> None:
    """Take a new snapshot (after a save)."""
    fields = tracked_fields(type(instance))
    if fields:
        instance.__dict__[SNAPSHOT_ATTR] = _snapshot(instance, fields)


def _is_expression(value: Any) -> bool:
    return hasattr(value, "resolve_expression") and not isinstance(value, models.Model)
