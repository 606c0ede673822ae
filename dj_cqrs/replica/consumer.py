"""The per-message path: apply one received message and decide what becomes of it.

``handle(message)`` validates (:mod:`.decoding`), routes and applies a message and returns an
:class:`~dj_cqrs.core.messages.Outcome` telling the transport what to do with it: acknowledge it,
retry it later, dead-letter it (with a :class:`~dj_cqrs.core.reasons.Reason`) or keep it for a
redelivery (the database is unreachable). Transports only move bytes; every decision is taken
here, the same way for every broker. The batched path (:mod:`.batch`) takes a message here when
its model needs Python code per row, and when a set-based write fails on it.

* :func:`apply` - apply one payload in its own transaction and classify the result
  (:mod:`.failures`);
* :func:`route_signal_to_replica_model` / :func:`consume` - django-cqrs's entry points, falsy on
  failure;
* :func:`~dj_cqrs.replica.outcome_log.log_outcome` - the one structured log line per message.

A failure is the handler raising, or returning a falsy value (django-cqrs's definition); the
default hooks say why in the :mod:`.context` report. Data that can never be applied (no
``cqrs_revision``/``cqrs_updated``, no primary key, required fields or mapped keys missing) is
dead-lettered at once instead of being retried.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from django.db import Error as DatabaseError
from django.db import router, transaction

from dj_cqrs.constants import SignalType
from dj_cqrs.core.messages import Action, InboundMessage, Outcome
from dj_cqrs.core.payload import TransportPayload
from dj_cqrs.core.reasons import Reason, Status
from dj_cqrs.registry import replica_registry
from dj_cqrs.replica import context, notify, tombstones
from dj_cqrs.replica.decoding import validate
from dj_cqrs.replica.failures import (
    classify_failure,
    database_unavailable,
    drop_if_broken,
    internal_error,
    is_connection_lost,
)
from dj_cqrs.replica.outcome_log import log_outcome
from dj_cqrs.replica.rules import ignores_broadcast_sync, is_direct_sync
from dj_cqrs.replica.timeouts import apply_query_timeout, is_timeout_error, log_timed_out_query

logger = logging.getLogger("django-cqrs.consumer")


class _HandlerFailed(Exception):
    """Raised inside the apply transaction to roll it back when a handler reports failure."""


def _meta_kwargs(model: Any, meta: dict[str, Any] | None) -> dict[str, Any]:
    return {"meta": meta} if getattr(model, "CQRS_META", False) else {}


def route_signal_to_replica_model(
    signal_type: SignalType | str,
    cqrs_id: str,
    instance_data: dict[str, Any],
    previous_data: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
    queue: str | None = None,
) -> Any:
    """Apply one event to its replica model; the return value is falsy on failure.

    As django-cqrs's: an unknown signal type or a database error is logged and gives None.
    """
    if signal_type not in _SIGNAL_VALUES:
        logger.error('Bad signal type "%s" for CQRS_ID "%s".', signal_type, cqrs_id)
        context.current().reason = Reason.BAD_SIGNAL_TYPE
        return None
    try:
        return _route(SignalType(signal_type), cqrs_id, instance_data, previous_data, meta, queue)
    except DatabaseError as exc:
        logger.error(
            "CQRS %s error: pk = %s, cqrs_revision = %s (%s): %s",
            SignalType(signal_type).value,
            instance_data.get("id"),
            instance_data.get("cqrs_revision"),
            cqrs_id,
            exc,
        )
        context.current().exception = exc
        return None


_SIGNAL_VALUES = frozenset([*SignalType, *(s.value for s in SignalType)])


def _route(
    signal: SignalType,
    cqrs_id: str,
    instance_data: dict[str, Any],
    previous_data: dict[str, Any] | None,
    meta: dict[str, Any] | None,
    queue: str | None,
) -> Any:
    """:func:`route_signal_to_replica_model` that raises (the worker classifies the exception)."""
    model = replica_registry.get_model_by_cqrs_id(cqrs_id)
    if model is None:
        logger.error("No model with such CQRS_ID: %s.", cqrs_id)
        context.current().reason = Reason.UNKNOWN_CQRS_ID
        return None
    if ignores_broadcast_sync(model, signal, queue):
        context.current().status = Status.IGNORED_BROADCAST_SYNC
        return True
    context.current().direct_sync = is_direct_sync(signal, queue)
    meta_kwargs = _meta_kwargs(model, meta)
    if getattr(model, "CQRS_NO_DB_OPERATIONS", False):
        return _call_handler(model, signal, instance_data, previous_data, meta_kwargs)
    db = router.db_for_write(model)
    drop_if_broken(db)
    tombstones.prune_if_due(db)
    result: Any = None
    try:
        with transaction.atomic(using=db, savepoint=False):
            apply_query_timeout(model, db)
            result = _call_handler(model, signal, instance_data, previous_data, meta_kwargs)
            if not result:
                raise _HandlerFailed()
            notify.applied(model, db)  # delivered at commit (read-your-writes)
    except _HandlerFailed:
        return result
    except Exception as exc:
        if is_timeout_error(exc, db):
            log_timed_out_query(exc, model, db)
        raise
    return result


def _call_handler(
    model: Any,
    signal: SignalType,
    instance_data: dict[str, Any],
    previous_data: dict[str, Any] | None,
    meta_kwargs: dict[str, Any],
) -> Any:
    """The hook call django-cqrs makes: ``cqrs_delete(data[, meta=])``, ``cqrs_save(data,
    previous_data=[, meta=])``, with ``sync=True`` added for a SYNC only."""
    if signal is SignalType.DELETE:
        return model.cqrs_delete(instance_data, **meta_kwargs)
    if signal is SignalType.SYNC:
        return model.cqrs_save(instance_data, previous_data=previous_data, sync=True, **meta_kwargs)
    return model.cqrs_save(instance_data, previous_data=previous_data, **meta_kwargs)


def _copies(payload: TransportPayload) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any] | None]:
    """What handlers get: copies, so that what they change never reaches the payload (which a
    retry or a dead letter re-publishes)."""
    previous, meta = payload.previous_data, payload.meta
    return (
        copy.deepcopy(payload.instance_data),
        None if previous is None else copy.deepcopy(previous),
        None if meta is None else copy.deepcopy(meta),
    )


def consume(payload: TransportPayload) -> Any:
    """Apply a payload (django-cqrs's ``dj_cqrs.controller.consumer.consume``): falsy on failure,
    None for a database error; the payload itself is never changed."""
    instance_data, previous_data, meta = _copies(payload)
    return route_signal_to_replica_model(
        signal_type=payload.signal_type,
        cqrs_id=payload.cqrs_id,
        instance_data=instance_data,
        previous_data=previous_data,
        meta=meta,
        queue=payload.queue,
    )


def apply(payload: TransportPayload) -> Outcome:
    """Apply one validated payload in its own transaction; never raises."""
    report = context.reset()
    try:
        instance_data, previous_data, meta = _copies(payload)
        result = _route(payload.signal_type, payload.cqrs_id, instance_data, previous_data, meta, payload.queue)
    except Exception as exc:  # the worker's top level: every failure is classified, none kills it
        if is_connection_lost(exc):
            return database_unavailable(payload, exc)
        return classify_failure(payload, exc, reason=Reason.EXCEPTION)
    if not result:
        error = report.exception
        if error is not None and is_connection_lost(error):
            return database_unavailable(payload, error)
        reason = report.reason or (Reason.EXCEPTION if error is not None else Reason.HANDLER_RETURNED_FALSY)
        detail = f"{reason}: {report.detail}" if report.detail and error is None else None
        return classify_failure(payload, error, reason=reason, detail=detail)
    return Outcome(Action.ACK, payload=payload, status=report.status or Status.APPLIED)


def handle(message: InboundMessage) -> Outcome:
    """Decide what happens to one message, applying it if it is valid. Never raises."""
    try:
        checked = validate(message)
        outcome = checked if isinstance(checked, Outcome) else apply(checked)
    except Exception as exc:  # noqa: BLE001 - last line of defence: a message never kills the worker
        outcome = internal_error(exc)
    return log_outcome(outcome, message)


__all__ = ["apply", "consume", "handle", "route_signal_to_replica_model"]
