"""Publishing committed outbox rows: claim them, publish them in order, mark them published.

Rows are claimed with ``SELECT ... FOR UPDATE SKIP LOCKED`` where the database has it, so the
immediate dispatcher, a sweep and any number of relays never publish the same row twice. Marking
rows published commits relaxed (``SET LOCAL synchronous_commit TO OFF`` on PostgreSQL).
"""

from __future__ import annotations

import datetime

from django.db import connections, transaction
from django.db.models import Q
from django.utils import timezone

from dj_cqrs.core.event import OUTBOX_SIGNAL, AnyPayload, EventPayload
from dj_cqrs.master import payloads, publisher
from dj_cqrs.master.outbox import event_order
from dj_cqrs.master.outbox.store import OutboxRow, outbox_model, read_rows
from dj_cqrs.registry import master_registry


def publish_items(
    using: str,
    items: list[tuple[int, AnyPayload | None]],
    *,
    own_connection: bool = False,
    fail_fast: bool = False,
) -> int:
    """Publish committed events in commit order and mark their rows published; return how many
    rows were handled.

    Each item is ``(outbox_id, payload)``: a payload built at commit is sent as is; a ``None`` one
    is built from its outbox row and the committed object (one query per model for all of them).
    One transaction: the rows are marked published first (``UPDATE ... RETURNING``, skipping rows
    another publisher holds, on PostgreSQL), which also locks them, so a relay or a sweep working
    at the same time skips them; then they are published; a failed publish rolls the marks back.
    Rows someone else published meanwhile are not sent again. The commit does not wait for the WAL
    flush on PostgreSQL (if it is lost, the events are published again; replicas ignore the second
    copy). ``own_connection``: the caller's connection does nothing else (the dispatcher's
    thread), so the relaxed commit is set once for its session. ``fail_fast``: one publish
    attempt, no retries or sleeps, where the transport offers it (the committing thread).
    """
    if not items:
        return 0
    with transaction.atomic(using=using):
        _relax(using, own_connection)
        # (the first event of a key, seq 1, has no older one to wait for)
        events = {outbox_id: p.key for outbox_id, p in items if isinstance(p, EventPayload) and p.seq > 1}
        if events:
            # Older events of the same keys go first, once their publisher is done (event_order).
            older = event_order.lock_older(using, events.values(), max(events), {i for i, _ in items})
            items = [*((outbox_id, None) for outbox_id in older), *items]
        claimed = _mark_pending(using, [outbox_id for outbox_id, _ in items])
        if not claimed:
            return 0
        missing = [outbox_id for outbox_id, payload in items if payload is None and outbox_id in claimed]
        built: dict[int, AnyPayload | None] = {}
        if missing:
            rows = read_rows(outbox_model().objects.using(using).filter(id__in=missing))
            built = {row.pk: payload for row, payload in payloads.payloads_for_rows(rows, using)}
        to_send: list[AnyPayload] = []
        for outbox_id, payload in items:
            if outbox_id not in claimed:
                continue  # published by someone else meanwhile
            if payload is None:
                payload = built.get(outbox_id)  # None: a SAVE whose object is gone (its DELETE follows)
            if payload is not None:
                to_send.append(payload)
        publisher.publish(to_send, fail_fast=fail_fast)
    return len(claimed)


def _relax(using: str, own_connection: bool) -> None:
    """Let the marking commit return before the WAL flush (PostgreSQL)."""
    conn = connections[using]
    if conn.vendor != "postgresql":
        return
    if not own_connection:
        _relaxed_commit(using)
        return
    if getattr(conn, _RELAXED_ATTR, None) is not conn.connection:
        with conn.cursor() as cursor:
            cursor.execute("SET synchronous_commit TO OFF")
        setattr(conn, _RELAXED_ATTR, conn.connection)


def _mark_pending(using: str, ids: list[int]) -> set[int]:
    """Mark the still unpublished rows among ``ids`` published (inside the caller's transaction);
    return their ids."""
    conn = connections[using]
    model = outbox_model()
    now = timezone.now()
    if conn.vendor == "postgresql":
        opts = model._meta
        qn = conn.ops.quote_name
        table, pk = qn(opts.db_table), qn(opts.pk.column)
        published = qn(opts.get_field("published_at").column)  # type: ignore[union-attr]
        marks = ", ".join(["%s"] * len(ids))
        with conn.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET {published} = %s WHERE {pk} IN (SELECT {pk} FROM {table} WHERE {pk} IN ({marks})"
                f" AND {published} IS NULL FOR UPDATE SKIP LOCKED) RETURNING {pk}",
                [now, *ids],
            )
            return {int(row[0]) for row in cursor.fetchall()}
    qs = model.objects.using(using).filter(id__in=ids, published_at__isnull=True)
    if supports_skip_locked(using):
        qs = qs.select_for_update(skip_locked=True)
    pending = set(qs.values_list("id", flat=True))
    if pending:
        model.objects.using(using).filter(id__in=pending).update(published_at=now)
    return pending


def publishable() -> Q:
    """The pending rows a publisher takes: events of this service's master models (rows of a
    CQRS_ID it no longer has stay pending, reported by the age alert) and domain events."""
    return Q(published_at__isnull=True) & (Q(cqrs_id__in=list(master_registry.models)) | Q(signal_type=OUTBOX_SIGNAL))


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
        qs = model.objects.using(using).filter(publishable())
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
    held = event_order.held_back(using, rows, {row.pk for row in rows})
    if held:
        rows = [row for row in rows if row.pk not in held]
    built = payloads.payloads_for_rows(rows, using)
    to_send = [p for _, p in built if p is not None]
    done_ids = [row.pk for row, _ in built]
    publisher.publish(to_send)
    model.objects.using(using).filter(id__in=done_ids).update(published_at=timezone.now())
    return len(done_ids)
