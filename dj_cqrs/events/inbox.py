"""The inbox: which handler has handled which event, and where each ordered handler stands.

* :func:`claim` inserts the ``(handler, event id)`` row inside the handler's transaction (one
  ``INSERT ... ON CONFLICT DO NOTHING``): no row inserted means the event was handled already,
  and a handler that raises rolls its row back with its work. A second worker delivering the same
  event meanwhile waits for the first one's transaction on the unique index, then skips it.
* :func:`advance` moves an ``ordered`` handler's position in a key (row locked for the rest of
  the transaction): False when the event is older than one already handled.
* :func:`prune_if_due` deletes rows older than ``CQRS['events']['inbox_retention']``, at most
  once an hour per process and database.
"""

from __future__ import annotations

import datetime
import time
from typing import Any

from django.apps import apps
from django.db import IntegrityError, connections, transaction
from django.utils import timezone

from dj_cqrs.conf import cqrs_settings
from dj_cqrs.core.event import EventPayload
from dj_cqrs.events.once import insert_once

HANDLED = "handled"
IGNORED_STALE = "ignored_stale"
PRUNE_EVERY = 3600.0
_PRUNE_CHUNK = 5000
_last_prune: dict[str, float] = {}


def _inbox() -> Any:
    return apps.get_model("dj_cqrs", "InboxEntry")


def _positions() -> Any:
    return apps.get_model("dj_cqrs", "HandlerPosition")


def claim(using: str, handler: str, event: EventPayload, status: str = HANDLED) -> bool:
    """Record that ``handler`` handles ``event``; False if it was recorded before."""
    values = {
        "handler": handler,
        "event_id": event.id,
        "name": event.name,
        "key": event.key,
        "seq": event.seq,
        "status": status,
        "handled_at": timezone.now(),
    }
    return insert_once(using, _inbox(), values)


def handled(using: str, handler: str, event_id: str) -> bool:
    """Whether ``handler`` has handled the event already (``atomic=False`` handlers): one plain
    ``SELECT`` (the ORM's ``exists()`` cost ten times as much per event)."""
    conn = connections[using]
    opts = _inbox()._meta
    qn = conn.ops.quote_name
    sql = (
        f"SELECT 1 FROM {qn(opts.db_table)} WHERE {qn(opts.get_field('handler').column)} = %s"
        f" AND {qn(opts.get_field('event_id').column)} = %s"
    )
    with conn.cursor() as cursor:
        cursor.execute(sql, [handler, event_id])
        return cursor.fetchone() is not None


def mark_stale(using: str, handler: str, event_id: str) -> None:
    _inbox().objects.using(using).filter(handler=handler, event_id=event_id).update(status=IGNORED_STALE)


#: What :func:`advance` answers.
GO = "go"
STALE = "stale"
WAIT = "wait"


def advance(using: str, handler: str, event: EventPayload) -> str:
    """Move ``handler``'s position in ``event.key`` to ``event.seq`` (inside the caller's
    transaction, the position row locked until it ends): ``go``; ``stale`` when the event is not
    newer than one handled; ``wait`` when an older event of the key failed and is being retried."""
    rows = _positions().objects.using(using)
    now = timezone.now()
    position = rows.select_for_update().filter(handler=handler, key=event.key).first()
    if position is None:
        try:
            with transaction.atomic(using=using):
                rows.create(handler=handler, key=event.key, seq=event.seq, updated_at=now)
            return GO
        except IntegrityError:  # created meanwhile by another worker: read it, locked
            position = rows.select_for_update().get(handler=handler, key=event.key)
    if position.seq >= event.seq:
        return STALE
    if position.waiting_for is not None and position.waiting_for < event.seq:
        return WAIT
    waiting_for = None if position.waiting_for == event.seq else position.waiting_for
    rows.filter(pk=position.pk).update(seq=event.seq, waiting_for=waiting_for, updated_at=now)
    return GO


def hold_newer(using: str, handler: str, event: EventPayload) -> None:
    """``handler`` failed on ``event`` and it will be retried: newer events of its key wait."""
    rows = _positions().objects.using(using)
    with transaction.atomic(using=using):
        position = rows.select_for_update().filter(handler=handler, key=event.key).first()
        if position is None:
            try:
                with transaction.atomic(using=using):
                    rows.create(handler=handler, key=event.key, seq=0, waiting_for=event.seq, updated_at=timezone.now())
                return
            except IntegrityError:
                position = rows.select_for_update().get(handler=handler, key=event.key)
        if position.seq < event.seq and (position.waiting_for is None or event.seq < position.waiting_for):
            rows.filter(pk=position.pk).update(waiting_for=event.seq, updated_at=timezone.now())


def release_newer(using: str, handler: str, event: EventPayload) -> None:
    """``event`` will not be retried (dead-lettered): newer events of its key stop waiting."""
    _positions().objects.using(using).filter(handler=handler, key=event.key, waiting_for=event.seq).update(
        waiting_for=None, updated_at=timezone.now()
    )


def prune_if_due(using: str) -> int:
    """Delete inbox rows past the retention period (at most once an hour per database)."""
    retention = cqrs_settings.events.inbox_retention
    now = time.monotonic()
    if retention is None or now - _last_prune.get(using, -PRUNE_EVERY) < PRUNE_EVERY:
        return 0
    _last_prune[using] = now
    return prune(using, float(retention))


def prune(using: str, retention: float) -> int:
    """Delete inbox rows handled more than ``retention`` seconds ago; return how many."""
    horizon = timezone.now() - datetime.timedelta(seconds=retention)
    rows = _inbox().objects.using(using)
    total = 0
    while True:
        ids = list(rows.filter(handled_at__lt=horizon).values_list("id", flat=True)[:_PRUNE_CHUNK])
        if not ids:
            return total
        total += rows.filter(id__in=ids).delete()[0]


__all__ = [
    "GO",
    "HANDLED",
    "IGNORED_STALE",
    "STALE",
    "WAIT",
    "advance",
    "claim",
    "handled",
    "hold_newer",
    "mark_stale",
    "prune",
    "prune_if_due",
    "release_newer",
]
