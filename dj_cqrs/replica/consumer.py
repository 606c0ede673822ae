"""Transport-independent handling of one received message.

``handle(message)`` decodes, validates, routes and applies a message and returns an
:class:`Outcome` telling the transport what to do with it: acknowledge it, retry it later,
dead-letter it (with a reason) or keep it for a redelivery (the database is unreachable).
Transports only move bytes; every decision is taken here, the same way for every broker.

The steps are separate functions so that a batching consumer can reuse them:

* :func:`prepare` - decode and validate (no database access): a payload to apply, or a final
  dead-letter :class:`Outcome` (malformed body, unknown ``cqrs_id``, expired);
* :func:`apply` - apply one payload in its own transaction and classify the result;
* :func:`classify_failure` - what a failure becomes (retry with a delay, or dead letter), as the
  model's ``should_retry_cqrs`` / ``get_cqrs_retry_delay`` hooks decide;
* :func:`log_outcome` - the one structured log line per message.

A failure is the handler raising, or returning a falsy value (django-cqrs's definition). Data
that can never be applied (no ``cqrs_revision``/``cqrs_updated``, no primary key, required
fields or mapped keys missing) is dead-lettered at once instead of being retried.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from typing import Any

from django.db import Error as DatabaseError
from django.db import close_old_connections, connections, router, transaction

from dj_cqrs import encoding
from dj_cqrs.conf import cqrs_settings
from dj_cqrs.constants import SignalType
from dj_cqrs.core.messages import Action, InboundMessage, Outcome
from dj_cqrs.core.names import direct_queue, original_routing_key
from dj_cqrs.core.payload import TransportPayload
from dj_cqrs.database import connect, is_outage
from dj_cqrs.exceptions import DecodeError, PayloadError
from dj_cqrs.log import describe, payload_context
from dj_cqrs.registry import replica_registry
from dj_cqrs.replica import context
from dj_cqrs.replica.managers import ApplyFailure
from dj_cqrs.replica.retry import sanitize_delay
from dj_cqrs.replica.timeouts import apply_query_timeout, is_timeout_error, log_timed_out_query

logger = logging.getLogger("django-cqrs.consumer")

#: Failure reasons recorded by the replica manager that no retry can fix.
PERMANENT_REASONS = frozenset(
    {"missing_cqrs_fields", "missing_pk", "bad_pk", "missing_required_fields", "bad_mapping", "unknown_cqrs_id"}
)


def parse_body(message: InboundMessage) -> Any:
    """The decoded JSON body; raise :class:`DecodeError` (with a reason) when it is not JSON."""
    limit = cqrs_settings.replica.max_message_bytes
    body = message.body
    if not isinstance(body, (bytes, bytearray, memoryview, str)):
        raise DecodeError(f"body of type {type(body).__name__} is not bytes", reason="invalid_body")
    size = len(body)
    if limit and size > limit:
        raise PayloadError(
            f"body of {size} bytes exceeds replica.max_message_bytes={limit}", reason="too_large"
        )
    try:
        return encoding.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(f"body is not valid UTF-8 JSON: {exc}", reason="invalid_json") from exc
    except RecursionError as exc:
        raise DecodeError("body is nested too deeply to decode", reason="invalid_json") from exc
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a malformed body
        raise DecodeError(f"body cannot be decoded: {type(exc).__name__}: {exc}", reason="invalid_json") from exc


def decode(message: InboundMessage) -> TransportPayload:
    """Parse a message into a payload; raise :class:`PayloadError` with a reason."""
    return _payload_from(message, parse_body(message))


def _payload_from(message: InboundMessage, data: Any) -> TransportPayload:
    if not isinstance(data, dict):
        raise DecodeError(f"body must be a JSON object, got {type(data).__name__}", reason="not_an_object")
    cqrs_id = data.get("cqrs_id")
    queue = direct_queue(original_routing_key(message.routing_key, message.headers), cqrs_id) if isinstance(cqrs_id, str) else None
    try:
        return TransportPayload.from_message(data, queue=queue)
    except PayloadError:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. an out-of-range date in ``expires``
        raise PayloadError(f"invalid body: {type(exc).__name__}: {exc}", reason="invalid_body") from exc


def prepare(message: InboundMessage) -> TransportPayload | Outcome:
    """Decode and validate without touching the database.

    Returns the payload to apply, or a DEAD_LETTER outcome for a message that must not be
    applied: malformed, too large, for an unknown ``cqrs_id``, or expired.
    """
    data: Any = None
    try:
        data = parse_body(message)
        payload = _payload_from(message, data)
    except PayloadError as exc:
        return Outcome(Action.DEAD_LETTER, reason=exc.reason, detail=str(exc), exception=exc, raw_cqrs_id=_peek(data))
    if replica_registry.get_model_by_cqrs_id(payload.cqrs_id) is None:
        return Outcome(
            Action.DEAD_LETTER,
            reason="unknown_cqrs_id",
            detail=f"no replica model with CQRS_ID {payload.cqrs_id!r} in this service",
            payload=payload,
        )
    if payload.is_expired():
        return Outcome(
            Action.DEAD_LETTER,
            reason="expired",
            detail=f"expired at {payload.expires.isoformat() if payload.expires else ''}",
            payload=payload,
        )
    return payload


def _peek(data: Any) -> str:
    """Best-effort ``cqrs_id`` of a malformed body, for the log line."""
    if isinstance(data, dict):
        cqrs_id = data.get("cqrs_id")
        if isinstance(cqrs_id, str):
            return cqrs_id[:200]
    return ""


def _meta_kwargs(model: Any, meta: dict[str, Any] | None) -> dict[str, Any]:
    return {"meta": meta} if getattr(model, "CQRS_META", False) else {}


def is_direct_sync(signal: SignalType, queue: str | None) -> bool:
    """A SYNC sent to this replica's queue (``cqrs_sync --queue``), not broadcast."""
    return signal is SignalType.SYNC and queue is not None and queue == cqrs_settings.queue


def ignores_broadcast_sync(model: Any, signal: SignalType, queue: str | None) -> bool:
    """True (and logged) for a broadcast SYNC of a ``CQRS_ONLY_DIRECT_SYNCS`` model."""
    if signal is SignalType.SYNC and getattr(model, "CQRS_ONLY_DIRECT_SYNCS", False) and queue != cqrs_settings.queue:
        logger.info("CQRS broadcast sync ignored for %s (CQRS_ONLY_DIRECT_SYNCS).", model.CQRS_ID)
        return True
    return False


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
        context.current()["reason"] = "bad_signal_type"
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
        context.current()["exception"] = exc
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
        context.current()["reason"] = "unknown_cqrs_id"
        return None
    if ignores_broadcast_sync(model, signal, queue):
        context.current()["status"] = "ignored_broadcast_sync"
        return True
    scratch = context.current()
    scratch["direct_sync"] = is_direct_sync(signal, queue)
    meta_kwargs = _meta_kwargs(model, meta)
    if getattr(model, "CQRS_NO_DB_OPERATIONS", False):
        return _call_handler(model, signal, instance_data, previous_data, meta_kwargs)
    db = router.db_for_write(model)
    drop_if_broken(db)
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


def is_connection_lost(exc: BaseException) -> bool:
    """True for database errors that mean "the database is unreachable", not "bad data"
    (:func:`dj_cqrs.database.is_outage`)."""
    return is_outage(exc)


def drop_if_broken(using: str) -> None:
    """Close the connection only when an error left it unusable, then make sure one is open
    (:class:`~dj_cqrs.exceptions.DatabaseUnavailable` when it cannot be: an outage).

    Not ``close_old_connections()``: a worker is not a request, and with ``CONN_MAX_AGE=0`` that
    would open a new database session for every message.
    """
    conn = connections[using]
    if conn.connection is not None and conn.errors_occurred and not conn.in_atomic_block:
        if conn.is_usable():
            conn.errors_occurred = False
        else:
            conn.close()
    connect(using)


def _drop_connections() -> None:
    with contextlib.suppress(Exception):
        close_old_connections()
    for alias in connections:
        with contextlib.suppress(Exception):
            connections[alias].close()


def classify_failure(payload: TransportPayload, exc: BaseException | None, reason: str) -> Outcome:
    """RETRY (with the model's delay) or DEAD_LETTER, as the model's hooks decide."""
    detail = f"{type(exc).__name__}: {exc}" if exc is not None else reason
    if reason in PERMANENT_REASONS:
        return Outcome(Action.DEAD_LETTER, reason=reason, detail=detail, payload=payload, exception=exc)
    model = replica_registry.get_model_by_cqrs_id(payload.cqrs_id)
    retry = False
    if model is not None:
        try:
            retry = bool(model.should_retry_cqrs(payload.retries, exc))
        except Exception as hook_error:  # noqa: BLE001 - a broken hook must not kill the worker
            if is_connection_lost(hook_error):
                return _database_unavailable(payload, hook_error)
            logger.exception("should_retry_cqrs of %s raised; the message is dead-lettered", payload.cqrs_id)
    if retry and model is not None:
        delay = 0.0
        try:
            delay = sanitize_delay(model.get_cqrs_retry_delay(payload.retries))
        except Exception as hook_error:  # noqa: BLE001
            if is_connection_lost(hook_error):
                return _database_unavailable(payload, hook_error)
            logger.exception("get_cqrs_retry_delay of %s raised; retrying without delay", payload.cqrs_id)
        return Outcome(Action.RETRY, reason=reason, detail=detail, delay=delay, payload=payload, exception=exc)
    return Outcome(
        Action.DEAD_LETTER,
        reason="max_retries",
        failure=reason,
        detail=detail,
        payload=payload,
        exception=exc,
    )


def _database_unavailable(payload: TransportPayload, exc: BaseException) -> Outcome:
    """Keep the message (unacknowledged) until the database is back; drop broken connections."""
    _drop_connections()
    return Outcome(
        Action.REQUEUE,
        reason="database_unavailable",
        detail=f"{type(exc).__name__}: {exc}",
        payload=payload,
        exception=exc,
    )


def apply(payload: TransportPayload) -> Outcome:
    """Apply one validated payload in its own transaction; never raises."""
    scratch = context.reset()
    try:
        instance_data, previous_data, meta = _copies(payload)
        result = _route(payload.signal_type, payload.cqrs_id, instance_data, previous_data, meta, payload.queue)
    except Exception as exc:  # the worker's top level: every failure is classified, none kills it
        if is_connection_lost(exc):
            return _database_unavailable(payload, exc)
        return classify_failure(payload, exc, reason="exception")
    if not result:
        caught = scratch.get("exception")
        error = caught if isinstance(caught, BaseException) else None
        if error is not None and is_connection_lost(error):
            return _database_unavailable(payload, error)
        reason = scratch.get("reason") or ("exception" if error is not None else "handler_returned_falsy")
        return classify_failure(payload, error, reason=reason)
    return Outcome(Action.ACK, payload=payload, status=scratch.get("status") or "applied")


def handle(message: InboundMessage) -> Outcome:
    """Decide what happens to one message, applying it if it is valid. Never raises."""
    try:
        prepared = prepare(message)
        outcome = prepared if isinstance(prepared, Outcome) else apply(prepared)
    except Exception as exc:  # noqa: BLE001 - last line of defence: a message never kills the worker
        logger.exception("CQRS message handling failed unexpectedly; the message is dead-lettered")
        outcome = Outcome(Action.DEAD_LETTER, reason="internal_error", detail=f"{type(exc).__name__}: {exc}", exception=exc)
    return log_outcome(outcome, message)


_STATUS_TEXT = {
    "applied": "applied",
    "ignored_stale": "ignored (stale revision)",
    "ignored_duplicate": "ignored (duplicate revision)",
    "ignored_broadcast_sync": "ignored (broadcast sync, CQRS_ONLY_DIRECT_SYNCS)",
    "ignored_deleted": "ignored (the object was deleted later: tombstone)",
    "ignored_stale_delete": "ignored (delete older than the stored object)",
}


_LEVELS = {
    Action.ACK: logging.INFO,
    Action.RETRY: logging.WARNING,
    Action.REQUEUE: logging.DEBUG,  # the transport logs the outage once, not every held message
    Action.DEAD_LETTER: logging.ERROR,
}


def log_outcome(outcome: Outcome, message: InboundMessage | None = None) -> Outcome:
    """Log the one line that says what happened to a message; returns ``outcome``."""
    level = _LEVELS[outcome.action]
    if not logger.isEnabledFor(level):
        return outcome
    payload = outcome.payload
    routing_key = original_routing_key(message.routing_key, message.headers) if message is not None else ""
    common = {
        "cqrs_outcome": outcome.action.value,
        "cqrs_status": outcome.status if outcome.action is Action.ACK else "",
        "cqrs_reason": outcome.reason,
        "cqrs_delay": outcome.delay,
        "cqrs_routing_key": routing_key,
    }
    if payload is not None:
        extra = payload_context(payload, **common)
        text = describe(payload)
    else:
        extra = {
            "cqrs_id": outcome.raw_cqrs_id or None,
            "cqrs_signal": None,
            "cqrs_pk": None,
            "cqrs_revision": None,
            "cqrs_correlation_id": None,
            "cqrs_retries": None,
            "cqrs_queue": None,
            **common,
        }
        size = len(message.body) if message is not None and hasattr(message.body, "__len__") else 0
        text = f"undecodable message ({size} bytes, routing_key={routing_key!r})"
    if outcome.action is Action.ACK:
        logger.info("CQRS %s: %s", _STATUS_TEXT.get(outcome.status, outcome.status), text, extra=extra)
    elif outcome.action is Action.RETRY:
        logger.warning(
            "CQRS failed, retry in %.3fs: %s reason=%s (%s)", outcome.delay, text, outcome.reason, outcome.detail,
            extra=extra,
        )
    elif outcome.action is Action.REQUEUE:
        logger.debug("CQRS kept for redelivery: %s reason=%s (%s)", text, outcome.reason, outcome.detail, extra=extra)
    else:
        logger.error("CQRS dead-lettered: %s reason=%s (%s)", text, outcome.reason, outcome.detail, extra=extra)
    return outcome


__all__ = [
    "apply",
    "classify_failure",
    "consume",
    "decode",
    "handle",
    "is_connection_lost",
    "log_outcome",
    "prepare",
    "route_signal_to_replica_model",
]
