"""Publishing committed outbox rows: claim them, publish them in order, mark them published.

Rows are claimed with ``SELECT ... FOR UPDATE SKIP LOCKED`` where the database has it, so the
immediate dispatcher, a sweep and any number of relays never publish the same row twice. Marking
rows published commits relaxed (``SET LOCAL synchronous_commit TO OFF`` on PostgreSQL).
"""

from __future__ import annotations

import datetime
import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.db import connections, transaction
from django.utils import timezone

from dj_cqrs import encoding
from dj_cqrs.constants import SignalType
from dj_cqrs.core.payload import TransportPayload, message_expiration
from dj_cqrs.master import publisher, serializers
from dj_cqrs.master.outbox.store import OutboxRow, outbox_model, read_rows
from dj_cqrs.registry import master_registry

if TYPE_CHECKING:
    from dj_cqrs.master.pending import PendingEvent

logger = logging.getLogger("django-cqrs.outbox")


def _pk_value(model: Any, text: str) -> Any:
    return model._meta.pk.to_python(text)


def build_payloads(rows: Iterable[OutboxRow], using: str) -> list[tuple[OutboxRow, TransportPayload | None]]:
    """Payloads for outbox rows, in row order; ``None`` where there is nothing to send (the object
    of a SAVE no longer exists: its DELETE follows). Rows of a SAVE are read in one query per model."""
    rows = list(rows)
    expires = message_expiration()
    wanted: dict[str, set[Any]] = defaultdict(set)
    for row in rows:
        if row.signal_type != SignalType.DELETE.value:
            model = master_registry.get_model_by_cqrs_id(row.cqrs_id)
            if model is not None:
                wanted[row.cqrs_id].add(_pk_value(model, row.object_pk))
    current: dict[str, dict[str, tuple[Any, dict[str, Any]]]] = {}
    for cqrs_id, pks in wanted.items():
        model = master_registry.get_model_by_cqrs_id(cqrs_id)
        if model is not None:
            current[cqrs_id] = publisher.fetch_serialized(model, using, list(pks))
    result: list[tuple[OutboxRow, TransportPayload | None]] = []
    for row in rows:
        model = master_registry.get_model_by_cqrs_id(row.cqrs_id)
        if model is None:
            logger.error("Outbox row %s has unknown CQRS_ID %r; it stays unpublished", row.pk, row.cqrs_id)
            continue
        data = encoding.loads(row.data)
        data = encoding.restore_exact(data)
        signal = SignalType(row.signal_type)
        if signal is SignalType.DELETE:
            payload = TransportPayload(
                signal_type=signal,
                cqrs_id=row.cqrs_id,
                instance_data=data["instance_data"],
                instance_pk=data["instance_data"].get("id"),
                previous_data=None,
                correlation_id=data.get("correlation_id"),
                expires=expires,
                meta=data.get("meta"),
            )
            result.append((row, payload))
            continue
        found = current.get(row.cqrs_id, {}).get(str(_pk_value(model, row.object_pk)))
        if found is None:
            result.append((row, None))
            continue
        obj_pk, instance_data = found
        payload = TransportPayload(
            signal_type=signal,
            cqrs_id=row.cqrs_id,
            instance_data=instance_data,
            instance_pk=publisher.instance_pk(obj_pk),
            queue=data.get("queue"),
            previous_data=data.get("previous_data"),
            correlation_id=data.get("correlation_id"),
            expires=expires,
            meta=data.get("meta") if data.get("meta") is not None else {},
        )
        result.append((row, payload))
    return result


def snapshot_payload(event: PendingEvent) -> TransportPayload | None:
    """The payload of a committed event built from memory, when memory is known to hold the
    committed state (no savepoint involved, no pending expression, default serializer); else None
    and the publisher reads the row."""
    if event.in_savepoint or event.must_read:
        return None
    if event.signal is SignalType.DELETE:
        if event.instance_data is None:
            return None
        return TransportPayload(
            signal_type=SignalType.DELETE,
            cqrs_id=event.cqrs_id,
            instance_data=event.instance_data,
            instance_pk=event.instance_data.get("id"),
            correlation_id=event.correlation_id,
            expires=message_expiration(),
            meta=event.meta,
        )
    instance = event.instance
    if instance is None or event.revision is None:
        return None
    if serializers.overrides(event.model, "to_cqrs_dict"):
        # The model's own serialization: a SYNC from the object cqrs_sync() refreshed (as
        # django-cqrs does), a SAVE from the committed row, which the publisher reads.
        if event.signal is not SignalType.SYNC:
            return None
        data = publisher.serialize(instance, sync=True)
    else:
        if serializers.serializer_class(event.model) is not None:
            return None
        overrides = _stored_overrides(instance)
        if overrides is None:
            return None
        data = serializers.default_serialize(instance)
        for name, value in overrides.items():
            if name in data:
                data[name] = value
        revision = instance.__dict__.get("cqrs_revision")
        data["cqrs_revision"] = revision if isinstance(revision, int) else event.revision
    return TransportPayload(
        signal_type=event.signal,
        cqrs_id=event.cqrs_id,
        instance_data=data,
        instance_pk=publisher.instance_pk(instance.pk),
        queue=event.queue,
        previous_data=event.previous_data,
        correlation_id=event.correlation_id,
        expires=message_expiration(),
        meta=event.meta if event.meta is not None else {},
    )


_SAFE_TYPES = (str, int, float, bool, uuid.UUID, datetime.date, datetime.time, datetime.timedelta)


def _stored_overrides(instance: Any) -> dict[str, Any] | None:
    """Whether every serialized value in memory is exactly what the database stored, so that the
    payload can be built without reading the row back: returns the values to correct (decimals
    quantized to their column, as the database does, without losing a digit), or None when
    anything is unusual (expressions, deferred fields, JSON, binary, custom types, naive
    datetimes with USE_TZ) and the publisher must read the row."""
    from decimal import Decimal, InvalidOperation

    from django.conf import settings

    values = instance.__dict__
    overrides: dict[str, Any] = {}
    for field in instance._meta.concrete_fields:
        attname = field.attname
        if attname not in values:
            return None
        value = values[attname]
        if value is None:
            continue
        if isinstance(value, Decimal):
            places = getattr(field, "decimal_places", None)
            if places is None:
                return None
            try:
                quantized = value.quantize(Decimal(1).scaleb(-places))
            except InvalidOperation:
                return None
            if quantized != value or len(quantized.as_tuple().digits) > (field.max_digits or 0):
                return None
            overrides[field.name] = quantized
            continue
        if isinstance(value, datetime.datetime) and settings.USE_TZ and timezone.is_naive(value):
            return None
        if not isinstance(value, _SAFE_TYPES):
            return None
    return overrides


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
            built = {row.pk: payload for row, payload in build_payloads(rows, using)}
        payloads = []
        for outbox_id, payload in todo:
            if payload is None:
                payload = built.get(outbox_id)
            if payload is not None:
                payloads.append(payload)
        _relaxed_commit(using)
        publisher.publish(payloads)
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
    built = build_payloads(rows, using)
    payloads = [p for _, p in built if p is not None]
    done_ids = [row.pk for row, _ in built]
    publisher.publish(payloads)
    model.objects.using(using).filter(id__in=done_ids).update(published_at=timezone.now())
    return len(done_ids)
