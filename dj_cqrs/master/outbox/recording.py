"""Recording master events in the outbox, inside the transaction of the change.

``record``/``record_many`` write one row per event (the event exists if and only if the change
commits); ``update_data`` follows an event merged with a later save of the same row;
``record_rows`` is the bulk path of ``Model.cqrs.bulk_update`` (one ``INSERT ... SELECT`` per chunk).
"""

from __future__ import annotations

from typing import Any

from django.db import connections
from django.utils import timezone

from dj_cqrs import audit, encoding
from dj_cqrs.conf import cqrs_settings
from dj_cqrs.constants import SignalType
from dj_cqrs.correlation import current_correlation_id, get_correlation_id
from dj_cqrs.master import hooks, payloads, serializers, tracking
from dj_cqrs.master.outbox.store import explained_missing_table, outbox_model
from dj_cqrs.master.pending import PendingEvent
from dj_cqrs.tracing import current_context as current_trace


def _meta_needed(instance: Any) -> bool:
    return cqrs_settings.master.meta_function is not None or hooks.overridden(type(instance), "get_cqrs_meta")


def _instance_meta(event: PendingEvent, instance: Any) -> dict[str, Any]:
    """``get_cqrs_meta()`` of a SAVE or SYNC, with what django-cqrs passes at commit: the
    instance's ``instance_data`` (``to_cqrs_dict(sync=...)``), the event's ``previous_data`` and
    its own signal type."""
    meta: dict[str, Any] = instance.get_cqrs_meta(
        instance_data=serializers.serialize(instance, sync=event.signal is SignalType.SYNC),
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
    trace = current_trace()
    if trace is not None:  # the active span's W3C context: sent as message headers, not in the body
        data["trace"] = trace
    return encoding.dumps(data, allow_nan=True)


def _correlation(event: PendingEvent) -> str | None:
    return get_correlation_id(event.signal, event.cqrs_id, payloads.instance_pk(event.pk), event.queue)


def _stored_revision(event: PendingEvent) -> int:
    model = event.model
    value = model._base_manager.using(event.using).filter(pk=event.pk).values_list("cqrs_revision", flat=True).get()
    return int(value)


def record(event: PendingEvent) -> None:
    """Write ``event`` to the outbox of its database (call inside the transaction)."""
    with explained_missing_table():
        _record(event)


def _record(event: PendingEvent) -> None:
    instance = event.instance
    correlation = _correlation(event)
    event.correlation_id = correlation
    if event.signal is SignalType.DELETE:
        assert event.instance_data is not None
        revision = event.instance_data.get("cqrs_revision")
        event.meta = audit.merged_or_none(event.meta)
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
    meta = audit.merged(meta)
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
    with explained_missing_table():
        _record_many(events)


def _record_many(events: list[PendingEvent]) -> None:
    if not events:
        return
    model = outbox_model()
    now = timezone.now()
    rows = []
    for event in events:
        instance = event.instance
        meta: dict[str, Any] | None
        if event.signal is not SignalType.DELETE and instance is not None and _meta_needed(instance):
            meta = _instance_meta(event, instance)
        else:
            meta = event.meta if event.signal is SignalType.DELETE else {}
        meta = audit.merged_or_none(meta)
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
        meta = audit.merged(_instance_meta(event, instance))
        meta_changed = meta != event.meta
        event.meta = meta
    if not (event.previous_changed or meta_changed):
        return
    model = outbox_model()
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
    outbox = outbox_model()
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
    return outbox_model()._meta.get_field("created_at").get_db_prep_value(timezone.now(), conn)


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
            opts = outbox_model()._meta
            qn = conn.ops.quote_name
            sql += f" RETURNING {qn(opts.pk.column)}, {qn(opts.get_field('object_pk').column)}, {qn(opts.get_field('revision').column)}"
            with conn.cursor() as cursor:
                cursor.execute(sql, params)
                result.extend((int(i), p, int(r)) for i, p, r in cursor.fetchall())
        else:
            with conn.cursor() as cursor:
                cursor.execute(sql, params)
            rows = (
                outbox_model()
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
    if tracking.tracked_fields(model):
        return None
    if cqrs_settings.master.meta_function is not None or hooks.overridden(model, "get_cqrs_meta"):
        return None
    if cqrs_settings.master.correlation_function is not None:
        return None
    trace = current_trace()
    if trace is not None:
        return encoding.dumps({"correlation_id": current_correlation_id(), "meta": audit.merged({}), "previous_data": None, "trace": trace})
    return encoding.dumps({"correlation_id": current_correlation_id(), "meta": audit.merged({}), "previous_data": None})


def last_delete_revision(using: str, cqrs_id: str, pk: Any) -> int | None:
    """The revision of the last DELETE of this object still in the outbox, if any."""
    value = (
        outbox_model()
        .objects.using(using)
        .filter(cqrs_id=cqrs_id, object_pk=str(pk), signal_type=SignalType.DELETE.value)
        .order_by("-id")
        .values_list("revision", flat=True)
        .first()
    )
    return int(value) if value is not None else None
