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


def publish_items(using: str, items: list[tuple[int, TransportPayload | None]]) -> int:
    """Publish committed events in commit order and mark their rows published.

    Each item is ``(outbox_id, payload)``; a payload built at commit is sent as is, a ``None`` one
    is built from its outbox row and the committed object (one query per model for all of them).
    The rows are claimed first (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so a relay or sweep
    working at the same time never publishes them too. The marking commit is relaxed
    (``SET LOCAL``).
    """
    if not items:
        return 0
    model = outbox_model()
    with transaction.atomic(using=using):
        qs = model.objects.using(using).filter(id__in=[outbox_id for outbox_id, _ in items], published_at__isnull=True)
        if supports_skip_locked(using):
            qs = qs.select_for_update(skip_locked=True)
        claimed = {row_id: (cqrs_id, object_pk) for row_id, cqrs_id, object_pk in qs.values_list("id", "cqrs_id", "object_pk")}
        if not claimed:
            return 0
        todo: list[tuple[int, TransportPayload | None]] = []
        for outbox_id, payload in items:
            if outbox_id not in claimed:
                continue  # published by someone else, or rolled back
            if payload is not None and claimed[outbox_id] != (payload.cqrs_id, str(payload.pk)):
                payload = None  # the id now belongs to another event: read what the row says
            todo.append((outbox_id, payload))
        missing = [outbox_id for outbox_id, payload in todo if payload is None]
        built: dict[int, TransportPayload | None] = {}
        if missing:
            rows = read_rows(model.objects.using(using).filter(id__in=missing))
            built = {row.pk: payload for row, payload in payloads.payloads_for_rows(rows, using)}
        to_send = []
        for outbox_id, payload in todo:
            if payload is None:
                payload = built.get(outbox_id)
            if payload is not None:
                to_send.append(payload)
        _relaxed_commit(using)
        publisher.publish(to_send)
        model.objects.using(using).filter(id__in=list(claimed)).update(published_at=timezone.now())
    return len(claimed)


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
        rows = read_rows(qs[:limit])
        return _publish_locked(using, rows)


def _relaxed_commit(using: str) -> None:
    """Marking rows published need not wait for the WAL flush: if that commit is lost in a crash,
    the events are published again, which replicas ignore (same revision)."""
    conn = connections[using]
    if conn.vendor == "postgresql":
        with conn.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")


def _publish_locked(using: str, rows: list[OutboxRow]) -> int:
    """Publish claimed rows and mark them published; return how many rows were handled."""
    if not rows:
        return 0
    _relaxed_commit(using)
    model = outbox_model()
    built = payloads.payloads_for_rows(rows, using)
    to_send = [p for _, p in built if p is not None]
    done_ids = [row.pk for row, _ in built]
    publisher.publish(to_send)
    model.objects.using(using).filter(id__in=done_ids).update(published_at=timezone.now())
    return len(done_ids)
