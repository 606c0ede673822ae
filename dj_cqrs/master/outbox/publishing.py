"""Publishing committed outbox rows: claim them, publish them in order, mark them published.

Rows are claimed with ``SELECT ... FOR UPDATE SKIP LOCKED`` where the database has it, so the
immediate dispatcher, a sweep and any number of relays never publish the same row twice. Marking
rows published commits relaxed (``SET LOCAL synchronous_commit TO OFF`` on PostgreSQL).
"""

from __future__ import annotations

import datetime

from django.db import connections, transaction
from django.utils import timezone

from dj_cqrs.core.payload import TransportPayload
from dj_cqrs.master import payloads, publisher
from dj_cqrs.master.outbox.store import OutboxRow, outbox_model, read_rows
from dj_cqrs.registry import master_registry


def publish_items(
    using: str, items: list[tuple[int, TransportPayload | None]], *, own_connection: bool = False
) -> int:
    """Publish committed events in commit order and mark their rows published; return how many
    rows were handled.

    Each item is ``(outbox_id, payload)``: a payload built at commit is sent as is; a ``None`` one
    is built from its outbox row and the committed object (one query per model for all of them;
    rows someone else published meanwhile are skipped). No rows are locked: the relay and the
    sweep only take rows older than ``outbox_grace``, and should both publish an event, replicas
    ignore the second copy (same revision). Rows are marked published after the broker confirmed
    them, in one UPDATE whose commit does not wait for the WAL flush (a lost mark only means the
    event is published again). ``own_connection``: the caller's connection does nothing else (the
    dispatcher's thread), so the relaxed commit is set once for its session.
    """
    if not items:
        return 0
    model = outbox_model()
    missing = [outbox_id for outbox_id, payload in items if payload is None]
    built: dict[int, TransportPayload | None] = {}
    if missing:
        rows = read_rows(model.objects.using(using).filter(id__in=missing, published_at__isnull=True))
        built = {row.pk: payload for row, payload in payloads.payloads_for_rows(rows, using)}
    to_send: list[TransportPayload] = []
    handled: list[int] = []
    for outbox_id, payload in items:
        if payload is None:
            if outbox_id not in built:
                continue  # published by someone else meanwhile
            payload = built[outbox_id]
        handled.append(outbox_id)
        if payload is not None:  # None: a SAVE whose object is gone (its DELETE follows)
            to_send.append(payload)
    publisher.publish(to_send)
    mark_published(using, handled, own_connection=own_connection)
    return len(handled)


def mark_published(using: str, ids: list[int], *, own_connection: bool = False) -> None:
    """Mark outbox rows published, with a relaxed commit on PostgreSQL."""
    if not ids:
        return
    conn = connections[using]
    update = outbox_model().objects.using(using).filter(id__in=ids, published_at__isnull=True)
    if conn.vendor != "postgresql":
        update.update(published_at=timezone.now())
    elif own_connection and not conn.in_atomic_block:
        conn.ensure_connection()
        if getattr(conn, _RELAXED_ATTR, None) is not conn.connection:
            with conn.cursor() as cursor:
                cursor.execute("SET synchronous_commit TO OFF")
            setattr(conn, _RELAXED_ATTR, conn.connection)
        update.update(published_at=timezone.now())
    else:
        with transaction.atomic(using=using):
            _relaxed_commit(using)
            update.update(published_at=timezone.now())


#: Set on a connection whose session commits relaxed (the raw connection it was set on).
_RELAXED_ATTR = "_dj_cqrs_relaxed_session"


def supports_skip_locked(using: str) -> bool:
    return bool(connections[using].features.has_select_for_update_skip_locked)


def claim_and_publish(using: str, limit: int, min_age: float = 0.0) -> int:
    """Publish up to ``limit`` of the oldest unpublished rows (the relay and the sweep); return
    how many rows were handled (a SAVE whose object is gone is handled without a message)."""
    model = outbox_model()
    with transaction.atomic(using=using):
        # Rows of a CQRS_ID this service no longer has stay pending (and are reported by the age
        # alert) without blocking the others.
        qs = model.objects.using(using).filter(published_at__isnull=True, cqrs_id__in=list(master_registry.models))
        if min_age > 0:
            qs = qs.filter(created_at__lte=timezone.now() - datetime.timedelta(seconds=min_age))
        qs = qs.order_by("id")
        if supports_skip_locked(using):
            qs = qs.select_for_update(skip_locked=True)
        _claim_settings(using)
        rows = read_rows(qs[:limit])
        return _publish_locked(using, rows)


def _claim_settings(using: str) -> None:
    """One round trip before the claim query: the marking commit is relaxed (see
    :func:`_relaxed_commit`) and the claim reads the partial index of pending rows in id order.

    Right after a burst of events (the backlog the relay is for) the table's statistics are stale
    and PostgreSQL plans a bitmap scan of every pending row plus a sort, for each batch: tens of
    milliseconds per 1000 rows instead of about one."""
    conn = connections[using]
    if conn.vendor == "postgresql":
        with conn.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF; SET LOCAL enable_bitmapscan TO OFF")


def _relaxed_commit(using: str) -> None:
    """Marking rows published need not wait for the WAL flush: if that commit is lost in a crash,
    the events are published again, which replicas ignore (same revision)."""
    conn = connections[using]
    if conn.vendor == "postgresql":
        with conn.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")


def _publish_locked(using: str, rows: list[OutboxRow]) -> int:
    """Publish claimed rows and mark them published; return how many rows were handled (the
    marking commit was relaxed by :func:`_claim_settings`)."""
    if not rows:
        return 0
    model = outbox_model()
    built = payloads.payloads_for_rows(rows, using)
    to_send = [p for _, p in built if p is not None]
    done_ids = [row.pk for row, _ in built]
    publisher.publish(to_send)
    model.objects.using(using).filter(id__in=done_ids).update(published_at=timezone.now())
    return len(done_ids)
