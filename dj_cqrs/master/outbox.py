"""The transactional outbox: master events stored in the transaction of the change.

``record``/``record_many`` run inside the transaction (the event exists if and only if the change
commits). ``claim``/``publish_rows``/``mark_published`` are used after commit by the immediate
dispatcher (:mod:`dj_cqrs.master.dispatcher`) and by the relay (:mod:`dj_cqrs.master.relay`).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from django.db import DatabaseError, connections, transaction
from django.utils import timezone

from dj_cqrs import encoding
from dj_cqrs.conf import cqrs_settings
from dj_cqrs.constants import SignalType
from dj_cqrs.core.payload import TransportPayload, message_expiration
from dj_cqrs.exceptions import ConfigurationError
from dj_cqrs.master import publisher, serializers
from dj_cqrs.registry import master_registry

if TYPE_CHECKING:
    from dj_cqrs.master.pending import PendingEvent
    from dj_cqrs.models import OutboxEvent

logger = logging.getLogger("django-cqrs.outbox")


def enabled() -> bool:
    return bool(cqrs_settings.master.CQRS_OUTBOX)


def _outbox_model() -> type[OutboxEvent]:
    from dj_cqrs.models import OutboxEvent

    return OutboxEvent


def _meta_needed(instance: Any) -> bool:
    from dj_cqrs.master.mixins import RawMasterMixin

    return cqrs_settings.master.meta_function is not None or (
        type(instance).get_cqrs_meta is not RawMasterMixin.get_cqrs_meta
    )


def _instance_meta(event: PendingEvent, instance: Any) -> dict[str, Any]:
    """``get_cqrs_meta()`` of a SAVE or SYNC, with what django-cqrs passes at commit: the
    instance's ``instance_data`` (``to_cqrs_dict(sync=...)``), the event's ``previous_data`` and
    its own signal type."""
    meta: dict[str, Any] = instance.get_cqrs_meta(
        instance_data=publisher.serialize(instance, sync=event.signal is SignalType.SYNC),
        previous_data=event.previous_data,
        signal_type=event.signal,
    )
    return meta


def _data(event: PendingEvent, correlation_id: str | None, meta: dict[str, Any] | None) -> str:
    data: dict[str, Any] = {"correlation_id": correlation_id, "meta": meta}
    if event.signal is SignalType.DELETE:
        data["instance_data"] = event.instance_data
    else:
        data["previous_data"] = event.previous_data
    if event.queue:
        data["queue"] = event.queue
    return encoding.dumps(data, allow_nan=True)


def _correlation(event: PendingEvent) -> str | None:
    return publisher.correlation_id(event.signal, event.cqrs_id, publisher.instance_pk(event.pk), event.queue)


def _stored_revision(event: PendingEvent) -> int:
    model = event.model
    value = model._base_manager.using(event.using).filter(pk=event.pk).values_list("cqrs_revision", flat=True).get()
    return int(value)


@contextlib.contextmanager
def _explained_missing_table() -> Iterator[None]:
    """A missing outbox table (``migrate dj_cqrs`` not run after moving from django-cqrs) is
    reported as such, not as a bare database error."""
    try:
        yield
    except DatabaseError as exc:
        text = str(exc).lower()
        if "dj_cqrs_outbox" in text and ("does not exist" in text or "no such table" in text):
            raise ConfigurationError(
                "dj_cqrs.E060: the outbox table dj_cqrs_outbox does not exist on this database:"
                " run `manage.py migrate dj_cqrs` (needed once after moving from django-cqrs)"
            ) from exc
        raise


def record(event: PendingEvent) -> None:
    """Write ``event`` to the outbox of its database (call inside the transaction)."""
    with _explained_missing_table():
        _record(event)


def _record(event: PendingEvent) -> None:
    instance = event.instance
    correlation = _correlation(event)
    event.correlation_id = correlation
    if event.signal is SignalType.DELETE:
        assert event.instance_data is not None
        revision = event.instance_data.get("cqrs_revision")
        event.outbox_id = _insert(event, revision, _data(event, correlation, event.meta))
        event.revision = revision
        return
    assert instance is not None
    revision = instance.__dict__.get("cqrs_revision")
    pending_bump = serializers.is_expression(revision)
    if _meta_needed(instance):
        if pending_bump:
            revision = _stored_revision(event)
            instance.__dict__["cqrs_revision"] = revision
            pending_bump = False
        meta = _instance_meta(event, instance)
    else:
        meta = {}
    event.meta = meta
    data = _data(event, correlation, meta)
    if pending_bump:
        event.outbox_id, revision = _insert_reading_revision(event, data)
        instance.__dict__["cqrs_revision"] = revision
    else:
        event.outbox_id = _insert(event, revision, data)
    event.revision = revision


def record_many(events: list[PendingEvent]) -> None:
    """Bulk version of :func:`record` for events whose revision is known (bulk operations)."""
    with _explained_missing_table():
        _record_many(events)


def _record_many(events: list[PendingEvent]) -> None:
    if not events:
        return
    model = _outbox_model()
    now = timezone.now()
    rows = []
    for event in events:
        instance = event.instance
        meta: dict[str, Any] | None
        if event.signal is not SignalType.DELETE and instance is not None and _meta_needed(instance):
            meta = _instance_meta(event, instance)
        else:
            meta = event.meta if event.signal is SignalType.DELETE else {}
        revision = event.revision
        if revision is None and instance is not None:
            revision = instance.__dict__.get("cqrs_revision")
        event.correlation_id = _correlation(event)
        event.meta = meta
        rows.append(
            model(
                created_at=now,
                cqrs_id=event.cqrs_id,
                signal_type=event.signal.value,
                object_pk=str(event.pk),
                revision=revision if isinstance(revision, int) else None,
                data=_data(event, event.correlation_id, meta),
            )
        )
    using = events[0].using
    created = model.objects.using(using).bulk_create(rows, batch_size=1000)
    for event, row in zip(events, created, strict=True):
        event.outbox_id = row.pk


def update_data(event: PendingEvent) -> None:
    """Rewrite the captured data of an event merged with a later save in the same transaction,
    when the merge changed its ``previous_data`` or its ``meta``.

    ``meta`` is built again from the object as this save left it (the last save of the
    transaction holds its final state), so that it describes the state the message carries, as
    django-cqrs's meta built at commit does. Models without a meta hook skip this work.
    """
    if event.outbox_id is None:
        return
    meta_changed = False
    instance = event.instance
    if event.signal is SignalType.SAVE and instance is not None and _meta_needed(instance):
        if serializers.is_expression(instance.__dict__.get("cqrs_revision")):
            instance.__dict__["cqrs_revision"] = _stored_revision(event)
        meta = _instance_meta(event, instance)
        meta_changed = meta != event.meta
        event.meta = meta
    if not (event.previous_changed or meta_changed):
        return
    model = _outbox_model()
    row = model.objects.using(event.using).only("data").get(pk=event.outbox_id)
    stored = encoding.loads(row.data)
    stored["previous_data"] = event.previous_data
    if meta_changed:
        stored["meta"] = event.meta
    model.objects.using(event.using).filter(pk=event.outbox_id).update(data=encoding.dumps(encoding.restore_exact(stored), allow_nan=True))


_COLUMNS = ("created_at", "cqrs_id", "signal_type", "object_pk", "revision", "data", "attempts", "last_error")
_sql_cache: dict[tuple[str, str, str], str] = {}


def _sql(kind: str, conn: Any, model: Any = None) -> str:
    """SQL for the outbox writes (cached per database vendor and model)."""
    key = (kind, conn.vendor, model._meta.label if model is not None else "")
    cached = _sql_cache.get(key)
    if cached is not None:
        return cached
    outbox = _outbox_model()
    opts = outbox._meta
    qn = conn.ops.quote_name
    columns = ", ".join(qn(opts.get_field(name).column) for name in _COLUMNS)  # type: ignore[union-attr]
    returning = conn.features.can_return_columns_from_insert
    id_col, rev_col = qn(opts.pk.column), qn(opts.get_field("revision").column)
    if kind == "values":
        sql = f"INSERT INTO {qn(opts.db_table)} ({columns}) VALUES (%s, %s, %s, %s, %s, %s, 0, '')"
        if returning:
            sql += f" RETURNING {id_col}"
    else:
        source = (
            f"SELECT %s, %s, %s, {qn(model._meta.pk.column)}, {qn(model._meta.get_field('cqrs_revision').column)}, %s, 0, '' "
            f"FROM {qn(model._meta.db_table)} WHERE {qn(model._meta.pk.column)} "
        )
        if kind == "select_one":
            sql = f"INSERT INTO {qn(opts.db_table)} ({columns}) {source}= %s"
            if returning:
                sql += f" RETURNING {id_col}, {rev_col}"
        else:  # select_many: the pk list is appended by the caller
            sql = f"INSERT INTO {qn(opts.db_table)} ({columns}) {source}IN "
    _sql_cache[key] = sql
    return sql


def _created_at(conn: Any) -> Any:
    return _outbox_model()._meta.get_field("created_at").get_db_prep_value(timezone.now(), conn)


def _insert(event: PendingEvent, revision: Any, data: str) -> int:
    conn = connections[event.using]
    params = [
        _created_at(conn),
        event.cqrs_id,
        event.signal.value,
        str(event.pk),
        revision if isinstance(revision, int) else None,
        data,
    ]
    with conn.cursor() as cursor:
        cursor.execute(_sql("values", conn), params)
        if conn.features.can_return_columns_from_insert:
            return int(cursor.fetchone()[0])
        return int(cursor.lastrowid)


def _insert_reading_revision(event: PendingEvent, data: str) -> tuple[int, int]:
    """One statement: INSERT the outbox row with the revision the change just wrote."""
    conn = connections[event.using]
    model = event.model
    params = [
        _created_at(conn),
        event.cqrs_id,
        event.signal.value,
        data,
        model._meta.pk.get_db_prep_value(event.pk, conn),
    ]
    with conn.cursor() as cursor:
        cursor.execute(_sql("select_one", conn, model), params)
        if conn.features.can_return_columns_from_insert:
            row = cursor.fetchone()
            if row is None:
                raise RuntimeError(f"{event.cqrs_id} {event.pk!r}: row not found for the outbox")
            return int(row[0]), int(row[1])
        new_id = cursor.lastrowid
    return int(new_id), _stored_revision(event)


def record_rows(model: Any, using: str, pks: list[Any], data: str) -> list[tuple[int, Any, int]]:
    """Bulk path: one outbox SAVE row per primary key with the same captured ``data``, revisions
    read from the table in the same statement. Returns ``[(outbox_id, pk_text, revision)]``."""
    conn = connections[using]
    pk_field = model._meta.pk
    result: list[tuple[int, Any, int]] = []
    created = _created_at(conn)
    for start in range(0, len(pks), 500):
        chunk = pks[start : start + 500]
        sql = _sql("select_many", conn, model) + "(" + ", ".join(["%s"] * len(chunk)) + ")"
        params = [created, model.CQRS_ID, SignalType.SAVE.value, data]
        params += [pk_field.get_db_prep_value(pk, conn) for pk in chunk]
        if conn.features.can_return_columns_from_insert:
            opts = _outbox_model()._meta
            qn = conn.ops.quote_name
            sql += f" RETURNING {qn(opts.pk.column)}, {qn(opts.get_field('object_pk').column)}, {qn(opts.get_field('revision').column)}"
            with conn.cursor() as cursor:
                cursor.execute(sql, params)
                result.extend((int(i), p, int(r)) for i, p, r in cursor.fetchall())
        else:
            with conn.cursor() as cursor:
                cursor.execute(sql, params)
            rows = (
                _outbox_model()
                .objects.using(using)
                .filter(cqrs_id=model.CQRS_ID, object_pk__in=[str(p) for p in chunk], published_at__isnull=True)
                .order_by("-id")
                .values_list("id", "object_pk", "revision")[: len(chunk)]
            )
            result.extend((int(i), p, int(r or 0)) for i, p, r in rows)
    return result


def constant_data(model: Any) -> str | None:
    """The captured data every bulk-updated row of ``model`` would get, when it does not depend on
    the row (no tracked fields, default meta, no correlation function); None otherwise."""
    from dj_cqrs.master import tracking
    from dj_cqrs.master.mixins import RawMasterMixin

    if tracking.tracked_fields(model):
        return None
    if cqrs_settings.master.meta_function is not None or model.get_cqrs_meta is not RawMasterMixin.get_cqrs_meta:
        return None
    if cqrs_settings.master.correlation_function is not None:
        return None
    from dj_cqrs.correlation import current_correlation_id

    return encoding.dumps({"correlation_id": current_correlation_id(), "meta": {}, "previous_data": None})


def last_delete_revision(using: str, cqrs_id: str, pk: Any) -> int | None:
    """The revision of the last DELETE of this object still in the outbox, if any."""
    value = (
        _outbox_model()
        .objects.using(using)
        .filter(cqrs_id=cqrs_id, object_pk=str(pk), signal_type=SignalType.DELETE.value)
        .order_by("-id")
        .values_list("revision", flat=True)
        .first()
    )
    return int(value) if value is not None else None


# -- publishing -------------------------------------------------------------------------------------


def _pk_value(model: Any, text: str) -> Any:
    return model._meta.pk.to_python(text)


class OutboxRow(NamedTuple):
    """The columns of an outbox row the publisher needs (read without building model instances)."""

    pk: int
    cqrs_id: str
    signal_type: str
    object_pk: str
    data: str
    created_at: datetime.datetime


_ROW_COLUMNS = ("id", "cqrs_id", "signal_type", "object_pk", "data", "created_at")


def read_rows(qs: Any) -> list[OutboxRow]:
    return [OutboxRow(*values) for values in qs.values_list(*_ROW_COLUMNS)]


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
    model = _outbox_model()
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
    model = _outbox_model()
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
    model = _outbox_model()
    built = build_payloads(rows, using)
    payloads = [p for _, p in built if p is not None]
    done_ids = [row.pk for row, _ in built]
    publisher.publish(payloads)
    model.objects.using(using).filter(id__in=done_ids).update(published_at=timezone.now())
    return len(done_ids)


def note_failure(using: str, ids: list[int], error: BaseException) -> None:
    """Count a failed attempt on rows that stay in the outbox (best effort)."""
    from django.db.models import F

    try:
        _outbox_model().objects.using(using).filter(id__in=ids, published_at__isnull=True).update(
            attempts=F("attempts") + 1, last_error=repr(error)[:2000]
        )
    except Exception:  # noqa: BLE001 - the database may be what failed; the rows stay pending anyway
        logger.debug("Could not record the outbox failure", exc_info=True)


def oldest_pending_age(using: str) -> float | None:
    created = (
        _outbox_model().objects.using(using).filter(published_at__isnull=True).order_by("id").values_list("created_at", flat=True).first()
    )
    if created is None:
        return None
    return (timezone.now() - created).total_seconds()


def prune(using: str, retention: float, chunk: int = 5000, max_rows: int | None = None) -> int:
    """Delete published rows older than ``retention`` seconds (at most ``max_rows``); return how many."""
    model = _outbox_model()
    cutoff = timezone.now() - datetime.timedelta(seconds=retention)
    total = 0
    while max_rows is None or total < max_rows:
        ids = list(
            model.objects.using(using).filter(published_at__lt=cutoff).order_by("id").values_list("id", flat=True)[:chunk]
        )
        if not ids:
            return total
        total += model.objects.using(using).filter(id__in=ids).delete()[0]
    return total
