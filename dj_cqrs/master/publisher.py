"""Turn committed master events into payloads and publish them.

SAVE events are serialized when their transaction has committed, from the rows as committed (one
query per model per transaction, through ``relate_cqrs_serialization``): the message carries the
final state and revision, and a row created and rolled back inside a savepoint is never announced.
"""

from __future__ import annotations

import logging
import sys
from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.db import models

from dj_cqrs.conf import cqrs_settings, resolve_callable
from dj_cqrs.constants import SignalType
from dj_cqrs.core.payload import TransportPayload, message_expiration
from dj_cqrs.encoding import to_json_value
from dj_cqrs.exceptions import PublishFailed
from dj_cqrs.log import payload_context
from dj_cqrs.master import serializers
from dj_cqrs.master.pending import PendingEvent
from dj_cqrs.transport import get_transport

if TYPE_CHECKING:
    from dj_cqrs.master.mixins import RawMasterMixin

logger = logging.getLogger("django-cqrs.master")


def correlation_id(signal: SignalType, cqrs_id: str, pk: Any, queue: str | None) -> str | None:
    func = resolve_callable(cqrs_settings.master.correlation_function)
    if func is None:
        from dj_cqrs.correlation import current_correlation_id

        return current_correlation_id()
    value = func(signal, cqrs_id, pk, queue)
    return None if value is None else str(value)


def instance_pk(pk: Any) -> Any:
    """``instance_pk`` on the wire: date/datetime/UUID (and other non-JSON types) as strings."""
    value = to_json_value(pk)
    if isinstance(value, (str, int, float)) or value is None:
        return value
    return str(value)


def build_payload(
    model: type[RawMasterMixin],
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
    return TransportPayload(
        signal_type=signal,
        cqrs_id=cqrs_id,
        instance_data=instance_data,
        instance_pk=instance_pk(pk),
        queue=queue,
        previous_data=previous_data,
        correlation_id=correlation_id(signal, cqrs_id, instance_pk(pk), queue),
        expires=message_expiration(),
        meta=meta,
    )


def delete_instance_data(instance: Any, revision: int) -> dict[str, Any]:
    from django.utils import timezone

    data: dict[str, Any] = {
        "id": instance_pk(instance.pk),
        "cqrs_revision": revision,
        "cqrs_updated": str(timezone.now()),
    }
    custom = instance.get_custom_cqrs_delete_data()
    if custom:
        data["custom"] = to_json_value(custom)
    return data


def _fetch_rows(model: type[RawMasterMixin], using: str, pks: list[Any]) -> dict[Any, Any]:
    qs = model.relate_cqrs_serialization(model._base_manager.using(using))
    rows: dict[Any, Any] = {}
    for start in range(0, len(pks), 1000):
        for row in qs.filter(pk__in=pks[start : start + 1000]):
            row.__dict__[serializers.FRESH_ROW_ATTR] = True
            rows[row.pk] = row
    return rows


def fetch_serialized(model: type[RawMasterMixin], using: str, pks: list[Any]) -> dict[str, tuple[Any, dict[str, Any]]]:
    """``{str(pk): (pk, instance_data)}`` of the committed rows (one query per 1000 keys).

    The default serialization reads plain values (no model instances); ``CQRS_SERIALIZER`` models
    are read through ``relate_cqrs_serialization`` and serialized by their serializer."""
    result: dict[str, tuple[Any, dict[str, Any]]] = {}
    if serializers.serializer_class(model) is not None or serializers.overrides(model, "to_cqrs_dict"):
        for pk, obj in _fetch_rows(model, using, pks).items():
            result[str(pk)] = (pk, serialize(obj))
        return result
    pk_attname = model._meta.pk.attname
    attnames = [attname for _, attname in serializers.serialized_fields(model)]
    columns = list(dict.fromkeys([pk_attname, *attnames, "cqrs_revision", "cqrs_updated"]))
    base = model._base_manager.using(using)
    for start in range(0, len(pks), 1000):
        for values in base.filter(pk__in=pks[start : start + 1000]).values_list(*columns):
            row = dict(zip(columns, values, strict=True))
            pk = row[pk_attname]
            result[str(pk)] = (pk, serializers.serialize_values(model, row))
    return result


def _existing_pks(model: type[models.Model], using: str, pks: list[Any]) -> set[Any]:
    found: set[Any] = set()
    for start in range(0, len(pks), 1000):
        found.update(
            model._base_manager.using(using).filter(pk__in=pks[start : start + 1000]).values_list("pk", flat=True)
        )
    return found


def serialize(instance: Any, sync: bool = False) -> dict[str, Any]:
    """``instance_data`` of ``instance``: the model's own ``to_cqrs_dict`` when it overrides it."""
    if serializers.overrides(type(instance), "to_cqrs_dict"):
        return instance.to_cqrs_dict(using=instance._state.db, sync=sync)  # type: ignore[no-any-return]
    cls = serializers.serializer_class(type(instance))
    if cls is None:
        return serializers.default_serialize(instance)
    return serializers.class_serialize(instance, cls)


def build_payloads(events: list[PendingEvent]) -> list[TransportPayload]:
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
            data = serialize(row)
            payloads.append(
                build_payload(event.model, SignalType.SAVE, row, data, row.pk, event.previous_data)  # type: ignore[arg-type]
            )
        elif event.signal is SignalType.DELETE:
            if (event.cqrs_id, event.pk) not in followed_by_save and event.pk in still_there.get(group, ()):
                logger.debug("%s %r exists at commit (rolled back delete): no DELETE sent", event.cqrs_id, event.pk)
                continue
            assert event.instance_data is not None
            payloads.append(
                build_payload(
                    event.model,  # type: ignore[arg-type]
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
            data = serialize(instance, sync=True)
            payloads.append(
                build_payload(
                    event.model,  # type: ignore[arg-type]
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


#: django-cqrs's producer entry point; tests patch ``produce`` there to see each published event.
PRODUCER_MODULE = "dj_cqrs.controller.producer"


def _controller_produce() -> Any:
    """``dj_cqrs.controller.producer.produce`` as it is now (patched or not), if imported.

    Looked up in ``sys.modules`` rather than imported: a module nobody imported cannot have been
    patched, and the master layer does not depend on the compatibility layer."""
    module = sys.modules.get(PRODUCER_MODULE)
    return None if module is None else getattr(module, "produce", None)


def produce_is_patched() -> bool:
    produce = _controller_produce()
    return produce is not None and getattr(produce, "dj_cqrs_native", None) is not True


def publishes_in_batches(transport: Any) -> bool:
    """Whether committed events go to ``transport.produce_many`` in batches; otherwise each goes
    through ``dj_cqrs.controller.producer.produce`` on its own, as django-cqrs publishes."""
    check = getattr(transport, "publishes_in_batches", None)
    return bool(check is not None and check()) and not produce_is_patched()


def _guarded(send: Any, payloads: list[TransportPayload]) -> None:
    try:
        send()
    except PublishFailed:
        raise
    except Exception as exc:  # a custom transport's own error: never dropped silently
        for payload in payloads:
            logger.error("CQRS publish failed", extra=payload_context(payload))
        raise PublishFailed(f"publishing {len(payloads)} CQRS message(s) failed: {exc}") from exc


def send(payload: TransportPayload) -> None:
    """Hand one payload to the configured transport; raise ``PublishFailed`` on failure."""
    transport = get_transport()
    _guarded(lambda: transport.produce(payload), [payload])


def publish(payloads: Iterable[TransportPayload]) -> None:
    """Publish payloads in order; raise ``PublishFailed`` on failure.

    Batched through ``produce_many`` where the transport batches (RabbitMQ, kombu), else one by
    one through ``dj_cqrs.controller.producer.produce`` (see :func:`publishes_in_batches`)."""
    payloads = list(payloads)
    if not payloads:
        return
    transport = get_transport()
    if publishes_in_batches(transport):
        _guarded(lambda: transport.produce_many(payloads), payloads)
        return
    produce = _controller_produce() or send
    for payload in payloads:
        _guarded(lambda: produce(payload), [payload])  # noqa: B023 - called at once


def flush(events: list[PendingEvent]) -> None:
    """Commit hook: publish every event of the committed transaction."""
    publish(build_payloads(events))
