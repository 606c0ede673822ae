"""One place builds the payloads of master events.

* :func:`build_payload`: from a model instance and its ``instance_data`` (``cqrs_sync``, the resync
  commands, the direct path without the outbox);
* :func:`payloads_for_events`: committed events, SAVEs serialized from the rows as committed (one
  query per model per transaction, through ``relate_cqrs_serialization``): the message carries the
  final state and revision, and a row created and rolled back inside a savepoint is never announced;
* :func:`payloads_for_rows`: outbox rows (the relay, the sweep, events whose payload was not built
  at commit), the objects of their SAVEs read in one query per model;
* :func:`snapshot_payload`: a committed event from memory, when memory is known to hold the
  committed state.
"""

from __future__ import annotations

import datetime
import json
import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from dj_cqrs import audit, encoding
from dj_cqrs.constants import SignalType
from dj_cqrs.core.event import OUTBOX_SIGNAL, AnyPayload, EventPayload
from dj_cqrs.core.payload import TransportPayload, aware_datetime, message_expiration
from dj_cqrs.correlation import get_correlation_id
from dj_cqrs.encoding import to_json_value
from dj_cqrs.master import hooks, serializers
from dj_cqrs.master.outbox.store import OutboxRow
from dj_cqrs.master.pending import PendingEvent
from dj_cqrs.registry import master_registry

logger = logging.getLogger("django-cqrs.master")
#: Where a row the outbox cannot publish is reported (as before payloads were built here).
outbox_logger = logging.getLogger("django-cqrs.outbox")


def instance_pk(pk: Any) -> Any:
    """``instance_pk`` on the wire: date/datetime/UUID (and other non-JSON types) as strings."""
    value = to_json_value(pk)
    if isinstance(value, (str, int, float)) or value is None:
        return value
    return str(value)


def build_payload(
    model: Any,
    signal: SignalType,
    instance: models.Model | None,
    instance_data: dict[str, Any],
    pk: Any,
    previous_data: dict[str, Any] | None,
    queue: str | None = None,
    meta: dict[str, Any] | None = None,
) -> TransportPayload:
    cqrs_id = str(model.CQRS_ID)
    if meta is None:
        kwargs: dict[str, Any] = {"instance_data": instance_data, "signal_type": signal}
        if signal is not SignalType.DELETE:
            kwargs["previous_data"] = previous_data
        meta = instance.get_cqrs_meta(**kwargs) if instance is not None else {}  # type: ignore[attr-defined]
    meta = audit.merged(meta)
    return TransportPayload(
        signal_type=signal,
        cqrs_id=cqrs_id,
        instance_data=instance_data,
        instance_pk=instance_pk(pk),
        queue=queue,
        previous_data=previous_data,
        correlation_id=get_correlation_id(signal, cqrs_id, instance_pk(pk), queue),
        expires=message_expiration(),
        meta=meta,
    )


def delete_instance_data(instance: Any, revision: int) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": instance_pk(instance.pk),
        "cqrs_revision": revision,
        "cqrs_updated": str(timezone.now()),
    }
    custom = instance.get_custom_cqrs_delete_data()
    if custom:
        data["custom"] = to_json_value(custom)
    return data


def _fetch_rows(model: Any, using: str, pks: list[Any]) -> dict[Any, Any]:
    qs = model.relate_cqrs_serialization(model._base_manager.using(using))
    rows: dict[Any, Any] = {}
    for start in range(0, len(pks), 1000):
        for row in qs.filter(pk__in=pks[start : start + 1000]):
            row.__dict__[serializers.FRESH_ROW_ATTR] = True
            rows[row.pk] = row
    return rows


def fetch_serialized(model: Any, using: str, pks: list[Any]) -> dict[str, tuple[Any, dict[str, Any]]]:
    """``{str(pk): (pk, instance_data)}`` of the committed rows (one query per 1000 keys, or one
    range query for a dense run of integer keys, as a backlog of new rows usually is).

    The default serialization reads plain values (no model instances); ``CQRS_SERIALIZER`` models
    are read through ``relate_cqrs_serialization`` and serialized by their serializer."""
    result: dict[str, tuple[Any, dict[str, Any]]] = {}
    if serializers.serializer_class(model) is not None or hooks.overrides(model, "to_cqrs_dict"):
        for pk, obj in _fetch_rows(model, using, pks).items():
            result[str(pk)] = (pk, serializers.serialize(obj))
        return result
    pk_attname = model._meta.pk.attname
    attnames = [attname for _, attname in serializers.serialized_fields(model)]
    columns = list(dict.fromkeys([pk_attname, *attnames, "cqrs_revision", "cqrs_updated"]))
    base = model._base_manager.using(using)
    serialize = serializers.serialize_values
    for chunk, wanted in _key_chunks(pks):
        if wanted is None:
            qs = base.filter(pk__in=chunk)
        else:
            qs = base.filter(pk__gte=chunk[0], pk__lte=chunk[-1])
        for values in qs.values_list(*columns):
            pk = values[0]
            if wanted is not None and pk not in wanted:
                continue
            result[str(pk)] = (pk, serialize(model, dict(zip(columns, values, strict=True))))
    return result


def _key_chunks(pks: list[Any]) -> list[tuple[list[Any], set[Any] | None]]:
    """The keys to read, as ``(keys, None)`` chunks for ``pk IN (...)`` (at most 1000 each), or
    for a dense run of integer keys as one ``([min, max], wanted)`` range (Django prepares every
    value of an ``IN`` list; a range costs two)."""
    if len(pks) > 1 and all(type(pk) is int for pk in pks):
        low, high = min(pks), max(pks)
        if high - low < 2 * len(pks):
            return [([low, high], set(pks))]
    return [(pks[start : start + 1000], None) for start in range(0, len(pks), 1000)]


def _existing_pks(model: type[models.Model], using: str, pks: list[Any]) -> set[Any]:
    found: set[Any] = set()
    for start in range(0, len(pks), 1000):
        found.update(
            model._base_manager.using(using).filter(pk__in=pks[start : start + 1000]).values_list("pk", flat=True)
        )
    return found


def payloads_for_events(events: list[PendingEvent]) -> list[TransportPayload]:
    """Payloads for committed events, in event order (rows are read in one query per model)."""
    saves: dict[tuple[Any, str], list[Any]] = defaultdict(list)
    deletes: dict[tuple[Any, str], list[Any]] = defaultdict(list)
    followed_by_save: set[tuple[str, Any]] = set()
    seen_save: set[tuple[str, Any]] = set()
    for event in reversed(events):
        key = (event.cqrs_id, event.pk)
        if event.signal is SignalType.SAVE:
            saves[(event.model, event.using)].append(event.pk)
            seen_save.add(key)
        elif event.signal is SignalType.DELETE:
            if key in seen_save:
                followed_by_save.add(key)
            else:
                deletes[(event.model, event.using)].append(event.pk)
    rows: dict[tuple[Any, str], dict[Any, Any]] = {
        group: _fetch_rows(group[0], group[1], pks) for group, pks in saves.items()
    }
    still_there: dict[tuple[Any, str], set[Any]] = {
        group: _existing_pks(group[0], group[1], pks) for group, pks in deletes.items()
    }
    payloads: list[TransportPayload] = []
    for event in events:
        group = (event.model, event.using)
        if event.signal is SignalType.SAVE:
            row = rows[group].get(event.pk)
            if row is None:
                logger.debug("%s %r is gone at commit: no SAVE sent", event.cqrs_id, event.pk)
                continue
            committed = row.__dict__.get("cqrs_revision")
            if isinstance(event.revision, int) and isinstance(committed, int) and committed < event.revision:
                # The change was rolled back with a savepoint: the row never had that revision.
                logger.debug("%s %r change was rolled back: no SAVE sent", event.cqrs_id, event.pk)
                continue
            if event.instance is not None:
                _refresh_revision(event.instance, row)
            data = serializers.serialize(row)
            payloads.append(
                build_payload(event.model, SignalType.SAVE, row, data, row.pk, event.previous_data)
            )
        elif event.signal is SignalType.DELETE:
            if (event.cqrs_id, event.pk) not in followed_by_save and event.pk in still_there.get(group, ()):
                logger.debug("%s %r exists at commit (rolled back delete): no DELETE sent", event.cqrs_id, event.pk)
                continue
            assert event.instance_data is not None
            payloads.append(
                build_payload(
                    event.model,
                    SignalType.DELETE,
                    event.instance,
                    event.instance_data,
                    event.pk,
                    None,
                    meta=event.meta,
                )
            )
        else:  # SYNC: serialized from the in-memory (refreshed) instance, as django-cqrs does
            instance = event.instance
            assert instance is not None
            data = serializers.serialize(instance, sync=True)
            payloads.append(
                build_payload(
                    event.model,
                    SignalType.SYNC,
                    instance,
                    data,
                    instance.pk,
                    event.previous_data,
                    queue=event.queue,
                )
            )
    return payloads


def _refresh_revision(instance: models.Model, row: models.Model) -> None:
    """Give the caller's instance the committed revision instead of a pending F() expression."""
    if serializers.is_expression(instance.__dict__.get("cqrs_revision")):
        instance.__dict__["cqrs_revision"] = row.__dict__.get("cqrs_revision")


def _pk_value(model: Any, text: str) -> Any:
    return model._meta.pk.to_python(text)


#: Outbox ``data`` as :func:`dj_cqrs.encoding.loads` then ``restore_exact`` read it: numbers with
#: a fraction or exponent as exact ``Decimal`` (one pass instead of two).
_ROW_DECODER = json.JSONDecoder(parse_float=Decimal)


def _row_data(text: str) -> Any:
    if "\\u" in text:  # an escape: the full check for lone surrogates
        return encoding.restore_exact(encoding.loads(text))
    return _ROW_DECODER.decode(text)


def payloads_for_rows(rows: Iterable[OutboxRow], using: str) -> list[tuple[OutboxRow, AnyPayload | None]]:
    """Payloads for outbox rows, in row order; ``None`` where there is nothing to send (the object
    of a SAVE no longer exists: its DELETE follows). Rows of a SAVE are read in one query per model."""
    rows = list(rows)
    expires = message_expiration()
    models_by_id: dict[str, Any] = {}
    keys: list[Any] = []  # the object's key of each row (None: a DELETE, or an unknown CQRS_ID)
    wanted: dict[str, set[Any]] = defaultdict(set)
    delete = SignalType.DELETE.value
    for row in rows:
        cqrs_id = row.cqrs_id
        if row.signal_type == OUTBOX_SIGNAL:
            keys.append(None)
            continue
        if cqrs_id not in models_by_id:
            models_by_id[cqrs_id] = master_registry.get_model_by_cqrs_id(cqrs_id)
        model = models_by_id[cqrs_id]
        key = None
        if model is not None and row.signal_type != delete:
            key = _pk_value(model, row.object_pk)
            wanted[cqrs_id].add(key)
        keys.append(key)
    current: dict[str, dict[str, tuple[Any, dict[str, Any]]]] = {
        cqrs_id: fetch_serialized(models_by_id[cqrs_id], using, list(pks)) for cqrs_id, pks in wanted.items()
    }
    signals = {signal.value: signal for signal in SignalType}
    result: list[tuple[OutboxRow, AnyPayload | None]] = []
    for row, key in zip(rows, keys, strict=True):
        if row.signal_type == OUTBOX_SIGNAL:
            result.append((row, event_payload(row, expires)))
            continue
        if models_by_id[row.cqrs_id] is None:
            outbox_logger.error("Outbox row %s has unknown CQRS_ID %r; it stays unpublished", row.pk, row.cqrs_id)
            continue
        data = _row_data(row.data)
        signal = signals.get(row.signal_type) or SignalType(row.signal_type)
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
            payload.trace = data.get("trace")
            result.append((row, payload))
            continue
        found = current[row.cqrs_id].get(str(key))
        if found is None:
            result.append((row, None))
            continue
        obj_pk, instance_data = found
        meta = data.get("meta")
        payload = TransportPayload(
            signal_type=signal,
            cqrs_id=row.cqrs_id,
            instance_data=instance_data,
            instance_pk=instance_pk(obj_pk),
            queue=data.get("queue"),
            previous_data=data.get("previous_data"),
            correlation_id=data.get("correlation_id"),
            expires=expires,
            meta=meta if meta is not None else {},
        )
        payload.trace = data.get("trace")
        result.append((row, payload))
    return result


def event_payload(row: OutboxRow, expires: datetime.datetime | None) -> EventPayload:
    """The domain event of an outbox row written by ``dj_cqrs.events.emit``."""
    data = _row_data(row.data)
    return EventPayload(
        id=data["id"],
        name=row.cqrs_id,
        key=row.object_pk,
        seq=int(row.revision or 0),
        version=data["version"],
        data=data["data"],
        meta=data.get("meta"),
        occurred_at=aware_datetime(data["occurred_at"]) or row.created_at,
        correlation_id=data.get("correlation_id"),
        expires=expires,
        trace=data.get("trace"),
    )


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
    if hooks.overrides(event.model, "to_cqrs_dict"):
        # The model's own serialization: a SYNC from the object cqrs_sync() refreshed (as
        # django-cqrs does), a SAVE from the committed row, which the publisher reads.
        if event.signal is not SignalType.SYNC:
            return None
        data = serializers.serialize(instance, sync=True)
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
        instance_pk=instance_pk(instance.pk),
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
