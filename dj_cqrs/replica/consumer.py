"""Transport-independent handling of one received message.

``handle(message)`` decodes, validates, routes and applies a message and returns an
:class:`Outcome` telling the transport what to do with it: acknowledge it, retry it later,
dead-letter it (with a reason) or keep it for a redelivery (the database is unreachable).
Transports only move bytes; every decision is taken here, the same way for every broker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import logging
from typing import Any

from django.db import close_old_connections, connections, router, transaction

from dj_cqrs import encoding
from dj_cqrs.conf import cqrs_settings
from dj_cqrs.constants import SignalType
from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.exceptions import DecodeError, PayloadError
from dj_cqrs.log import describe, payload_context
from dj_cqrs.registry import replica_registry
from dj_cqrs.replica import context
from dj_cqrs.replica.managers import ApplyFailure
from dj_cqrs.replica.timeouts import apply_query_timeout, is_timeout_error, log_timed_out_query

logger = logging.getLogger("django-cqrs.consumer")


class Action(enum.Enum):
    ACK = "ack"
    RETRY = "retry"
    DEAD_LETTER = "dead_letter"
    REQUEUE = "requeue"


@dataclasses.dataclass(frozen=True)
class InboundMessage:
    """A message as a transport received it."""

    body: bytes
    routing_key: str = ""
    headers: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: Opaque transport handle (delivery tag, kombu message ...).
    handle: Any = None


@dataclasses.dataclass(frozen=True)
class Outcome:
    action: Action
    reason: str = ""
    detail: str = ""
    delay: float = 0.0
    payload: TransportPayload | None = None
    exception: BaseException | None = None
    #: ``applied``, ``ignored`` ... for the log line and metrics.
    status: str = ""


ROUTING_KEY_HEADER = "x-cqrs-routing-key"


def direct_queue(routing_key: str, cqrs_id: str) -> str | None:
    """The queue a ``cqrs.<queue>.<cqrs_id>`` routing key addresses (None for a broadcast)."""
    prefix, suffix = "cqrs.", "." + cqrs_id
    if routing_key.startswith(prefix) and routing_key.endswith(suffix):
        queue = routing_key[len(prefix) : -len(suffix)]
        return queue or None
    return None


def decode(message: InboundMessage) -> TransportPayload:
    """Parse a message into a payload; raise :class:`PayloadError` with a reason."""
    limit = cqrs_settings.replica.max_message_bytes
    if limit and len(message.body) > limit:
        raise PayloadError(
            f"body of {len(message.body)} bytes exceeds replica.max_message_bytes={limit}",
            reason="too_large",
        )
    try:
        data = encoding.loads(message.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(f"body is not valid UTF-8 JSON: {exc}", reason="invalid_json") from exc
    if not isinstance(data, dict):
        raise DecodeError(f"body must be a JSON object, got {type(data).__name__}", reason="not_an_object")
    routing_key = message.headers.get(ROUTING_KEY_HEADER) or message.routing_key or ""
    cqrs_id = data.get("cqrs_id")
    queue = direct_queue(str(routing_key), cqrs_id) if isinstance(cqrs_id, str) else None
    return TransportPayload.from_message(data, queue=queue)


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
    """Apply one event to its replica model; the return value is falsy on failure."""
    model = replica_registry.get_model_by_cqrs_id(cqrs_id)
    if model is None:
        logger.error("No model with such CQRS_ID: %s.", cqrs_id)
        context.current()["reason"] = "unknown_cqrs_id"
        return None
    signal = SignalType(signal_type)
    if signal is SignalType.SYNC and getattr(model, "CQRS_ONLY_DIRECT_SYNCS", False):
        own = cqrs_settings.queue
        if queue != own:
            logger.info("CQRS broadcast sync ignored for %s (CQRS_ONLY_DIRECT_SYNCS).", cqrs_id)
            context.current()["status"] = "ignored_broadcast_sync"
            return True
    scratch = context.current()
    scratch["direct_sync"] = signal is SignalType.SYNC and queue is not None and queue == cqrs_settings.queue
    meta_kwargs = _meta_kwargs(model, meta)
    if getattr(model, "CQRS_NO_DB_OPERATIONS", False):
        return _call_handler(model, signal, instance_data, previous_data, meta_kwargs)
    db = router.db_for_write(model)
    close_old_connections()
    from dj_cqrs.replica import tombstones

    tombstones.prune_if_due(db)
    result: Any = None
    try:
        with transaction.atomic(using=db, savepoint=False):
            apply_query_timeout(model, db)
            result = _call_handler(model, signal, instance_data, previous_data, meta_kwargs)
            if not result:
                raise ApplyFailure()
    except ApplyFailure:
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
    if signal is SignalType.DELETE:
        return model.cqrs_delete(instance_data, **meta_kwargs)
    return model.cqrs_save(
        instance_data, previous_data=previous_data, sync=signal is SignalType.SYNC, **meta_kwargs
    )


def consume(payload: TransportPayload) -> Any:
    """Apply a payload (django-cqrs's ``dj_cqrs.controller.consumer.consume``)."""
    return route_signal_to_replica_model(
        signal_type=payload.signal_type,
        cqrs_id=payload.cqrs_id,
        instance_data=payload.instance_data,
        previous_data=payload.previous_data,
        meta=payload.meta,
        queue=payload.queue,
    )


def is_connection_lost(exc: BaseException) -> bool:
    """True for database errors that mean "the database is unreachable", not "bad data"."""
    from django.db import InterfaceError, OperationalError

    if isinstance(exc, InterfaceError):
        return True
    if isinstance(exc, OperationalError):
        for alias in connections:
            conn = connections[alias]
            if conn.connection is not None and not conn.is_usable():
                return True
        text = str(exc).lower()
        return any(
            marker in text
            for marker in (
                "server closed the connection",
                "could not connect",
                "connection refused",
                "terminating connection",
                "connection already closed",
                "no connection to the server",
                "lost connection",
                "gone away",
                "connection reset",
                "the database system is",
            )
        )
    return False


def _failure(payload: TransportPayload, exc: BaseException | None, reason: str) -> Outcome:
    model = replica_registry.get_model_by_cqrs_id(payload.cqrs_id)
    detail = f"{type(exc).__name__}: {exc}" if exc is not None else reason
    retry = False
    if model is not None:
        try:
            retry = bool(model.should_retry_cqrs(payload.retries, exc))
        except Exception:  # noqa: BLE001 - a broken hook must not kill the worker
            logger.exception("should_retry_cqrs of %s raised; the message is dead-lettered", payload.cqrs_id)
    if retry:
        delay = 0.0
        try:
            delay = float(model.get_cqrs_retry_delay(payload.retries))
        except Exception:  # noqa: BLE001
            logger.exception("get_cqrs_retry_delay of %s raised; retrying without delay", payload.cqrs_id)
        return Outcome(Action.RETRY, reason=reason, detail=detail, delay=max(delay, 0.0), payload=payload, exception=exc)
    return Outcome(
        Action.DEAD_LETTER,
        reason="max_retries" if payload.retries else reason,
        detail=detail,
        payload=payload,
        exception=exc,
    )


def handle(message: InboundMessage) -> Outcome:
    """Decide what happens to one message, applying it if it is valid. Never raises."""
    scratch = context.reset()
    try:
        payload = decode(message)
    except PayloadError as exc:
        return _log(Outcome(Action.DEAD_LETTER, reason=exc.reason, detail=str(exc), exception=exc))
    if replica_registry.get_model_by_cqrs_id(payload.cqrs_id) is None:
        return _log(
            Outcome(
                Action.DEAD_LETTER,
                reason="unknown_cqrs_id",
                detail=f"no replica model with CQRS_ID {payload.cqrs_id!r} in this service",
                payload=payload,
            )
        )
    if payload.is_expired():
        return _log(
            Outcome(
                Action.DEAD_LETTER,
                reason="expired",
                detail=f"expired at {payload.expires.isoformat() if payload.expires else ''}",
                payload=payload,
            )
        )
    try:
        result = consume(payload)
    except Exception as exc:  # the worker's top level: every failure is classified, none kills it
        if is_connection_lost(exc):
            with contextlib.suppress(Exception):
                close_old_connections()
            for alias in connections:
                with contextlib.suppress(Exception):
                    connections[alias].close()
            return _log(
                Outcome(Action.REQUEUE, reason="database_unavailable", detail=f"{type(exc).__name__}: {exc}", payload=payload, exception=exc)
            )
        return _log(_failure(payload, exc, reason="exception"))
    if not result:
        exc = scratch.get("exception")
        return _log(_failure(payload, exc, reason=scratch.get("reason") or "handler_returned_falsy"))
    return _log(Outcome(Action.ACK, payload=payload, status=scratch.get("status") or "applied"))


def _log(outcome: Outcome) -> Outcome:
    payload = outcome.payload
    extra = payload_context(payload, cqrs_outcome=outcome.action.value, cqrs_reason=outcome.reason) if payload else {
        "cqrs_outcome": outcome.action.value,
        "cqrs_reason": outcome.reason,
    }
    text = describe(payload) if payload else "undecodable message"
    if outcome.action is Action.ACK:
        logger.info("CQRS %s: %s", outcome.status or "applied", text, extra=extra)
    elif outcome.action is Action.RETRY:
        logger.warning(
            "CQRS failed, retry in %.1fs: %s reason=%s (%s)", outcome.delay, text, outcome.reason, outcome.detail,
            extra=extra,
        )
    elif outcome.action is Action.REQUEUE:
        logger.warning("CQRS kept for redelivery: %s reason=%s (%s)", text, outcome.reason, outcome.detail, extra=extra)
    else:
        logger.error("CQRS dead-lettered: %s reason=%s (%s)", text, outcome.reason, outcome.detail, extra=extra)
    return outcome
