"""Signals of master models and dj_cqrs's receivers, which record events for the commit.

``post_bulk_create(sender, instances, using)`` and ``post_update(sender, instances, using)`` are
django-cqrs's custom signals (importable from ``dj_cqrs.signals`` too): they make the master publish
one event per instance; ``Model.cqrs.bulk_create``/``bulk_update`` send them, and
``Model.call_post_bulk_create``/``call_post_update`` let you send them yourself.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import connections, models, router
from django.db.models.signals import post_delete, post_save
from django.dispatch import Signal

from dj_cqrs import audit
from dj_cqrs.constants import SignalType
from dj_cqrs.correlation import current_correlation_id
from dj_cqrs.master import dispatch, payloads, pending, tracking
from dj_cqrs.master.outbox.inline import InlineSave
from dj_cqrs.master.outbox.inline_delete import ACTIVE_ATTR as INLINE_DELETE_ATTR
from dj_cqrs.master.serializers import is_expression, refresh_saved_expressions

logger = logging.getLogger("django-cqrs.master")

post_bulk_create = Signal()
post_update = Signal()

#: Attribute set on an instance by ``MasterMixin.save`` for the duration of the save.
SAVE_CONTEXT_ATTR = "_cqrs_save_context"
#: ``(revision, outbox_id)`` set by ``Model.cqrs.bulk_create`` on an object whose INSERT wrote its
#: outbox row, until its event is recorded.
INLINE_MARK_ATTR = "_cqrs_inline_outbox_row"


def _produces(instance: Any) -> bool:
    return bool(type(instance).CQRS_PRODUCE) and bool(instance.is_sync_instance())


def save_event(instance: Any, using: str, previous_data: dict[str, Any] | None) -> pending.PendingEvent:
    event = pending.PendingEvent(
        signal=SignalType.SAVE,
        model=type(instance),
        pk=instance.pk,
        using=using,
        instance=instance,
        previous_data=previous_data,
        # Not published, but remembered so that the revision is bumped once per transaction.
        silent=not _produces(instance),
    )
    revision = instance.__dict__.get("cqrs_revision")
    if isinstance(revision, int):
        event.revision = revision
    if connections[using].savepoint_ids:
        event.in_savepoint = True
    return event


def record_save(
    instance: Any,
    using: str,
    *,
    created: bool,
    previous_data: dict[str, Any] | None,
    must_read: bool = False,
    inline_save: InlineSave | None = None,
) -> pending.PendingEvent | None:
    event = save_event(instance, using, previous_data)
    event.must_read = must_read
    if inline_save is not None and inline_save.outbox_id is not None:
        # The statement that wrote the row wrote its outbox row too.
        event.outbox_id = inline_save.outbox_id
        event.revision = inline_save.revision
        event.correlation_id = inline_save.correlation_id
        event.meta = {}
        return dispatch.add_recorded(event)
    return dispatch.add(event)


def on_post_save(sender: type[models.Model], instance: Any, created: bool = False, **kwargs: Any) -> None:
    using = kwargs.get("using") or router.db_for_write(sender, instance=instance)
    update_fields = kwargs.get("update_fields")
    context = instance.__dict__.get(SAVE_CONTEXT_ATTR)
    if context is None:
        # A save that did not go through MasterMixin.save (e.g. loaddata's raw save).
        if update_fields is not None and "cqrs_revision" not in update_fields:
            return
        previous = tracking.remember(instance, tracking.changes(instance, created=created))
    else:
        # Before anything reads the instance (the outbox, meta hooks, receivers connected
        # after ours), expressions written by this save become the stored values.
        refresh_saved_expressions(instance, using, update_fields)
        if not context["publish"]:
            return
        previous = context.get("previous_data")
    # A partial save leaves fields unsaved in memory: the published state is read from the row.
    must_read = update_fields is not None
    context_event = record_save(
        instance,
        using,
        created=created,
        previous_data=previous,
        must_read=must_read,
        inline_save=None if context is None else context.get("inline"),
    )
    if context is not None:
        context["event"] = context_event


def on_post_delete(sender: type[models.Model], instance: Any, **kwargs: Any) -> None:
    if not _produces(instance):
        return
    using = kwargs.get("using") or router.db_for_write(sender, instance=instance)
    inline_delete = instance.__dict__.get(INLINE_DELETE_ATTR)
    if inline_delete is not None and inline_delete.outbox_id is not None:
        # The statement that deleted the row wrote its outbox row too.
        dispatch.add_recorded(inline_delete.event())
        return
    revision = instance.__dict__.get("cqrs_revision")
    known = pending.find(using, sender.CQRS_ID, instance.pk)  # type: ignore[attr-defined]
    if known is not None and known.revision is not None:
        revision = known.revision
    if revision is None or is_expression(revision):
        revision = 0
    data = payloads.delete_instance_data(instance, revision + 1)
    meta = audit.merged(instance.get_cqrs_meta(instance_data=data, signal_type=SignalType.DELETE))
    event = pending.PendingEvent(
        signal=SignalType.DELETE,
        model=sender,
        pk=instance.pk,
        using=using,
        instance=instance,
        instance_data=data,
        meta=meta,
        in_savepoint=bool(connections[using].savepoint_ids),
    )
    dispatch.add(event)


def _record_bulk(sender: type[models.Model], instances: list[Any], using: str | None, previous: dict[Any, Any]) -> None:
    by_db: dict[str, list[pending.PendingEvent]] = {}
    correlation = current_correlation_id()
    for instance in instances:
        db = using or router.db_for_write(sender, instance=instance)
        event = save_event(instance, db, tracking.remember(instance, previous.get(id(instance))))
        event.must_read = bool(instance.__dict__.pop("_cqrs_must_read", False))
        mark = instance.__dict__.pop(INLINE_MARK_ATTR, None)
        if mark is not None:  # the INSERT wrote its outbox row (Model.cqrs.bulk_create)
            event.revision, event.outbox_id = mark
            event.correlation_id, event.meta = correlation, audit.merged({})
        by_db.setdefault(db, []).append(event)
    for events in by_db.values():
        recorded = [event for event in events if event.outbox_id is not None]
        if recorded:
            dispatch.add_many_recorded(recorded)
        if len(recorded) < len(events):
            dispatch.add_many([event for event in events if event.outbox_id is None])


def on_post_bulk_create(sender: type[models.Model], instances: list[Any], using: str | None = None, **kwargs: Any) -> None:
    previous: dict[Any, Any] = {}
    for instance in instances:
        value = instance.__dict__.pop("_cqrs_bulk_previous", None)
        previous[id(instance)] = value if value is not None else tracking.changes(instance, created=True)
        tracking.reset(instance)
    _record_bulk(sender, instances, using, previous)


def on_post_update(sender: type[models.Model], instances: list[Any], using: str | None = None, **kwargs: Any) -> None:
    if kwargs.get("cqrs_recorded"):
        return  # Model.cqrs.bulk_update already wrote these events
    previous_map = kwargs.get("previous_data") or {}
    previous: dict[Any, Any] = {}
    for instance in instances:
        value = previous_map.get(instance.pk)
        if value is None:
            value = instance.__dict__.pop("_cqrs_bulk_previous", None)
        previous[id(instance)] = value
    _record_bulk(sender, instances, using, previous)


def dispatch_uid(model: type[models.Model]) -> str:
    """The ``dispatch_uid`` of dj_cqrs's own signal receivers for ``model``."""
    return f"dj_cqrs_{model._meta.label_lower}_{id(model)}"


def connect(model: type[models.Model]) -> None:
    uid = dispatch_uid(model)
    post_save.connect(on_post_save, sender=model, weak=False, dispatch_uid=uid)
    post_delete.connect(on_post_delete, sender=model, weak=False, dispatch_uid=uid)
    post_bulk_create.connect(on_post_bulk_create, sender=model, weak=False, dispatch_uid=uid)
    post_update.connect(on_post_update, sender=model, weak=False, dispatch_uid=uid)
