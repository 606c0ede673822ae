"""A received message's body as a payload, checked without touching the database.

:func:`validate` is the first step of the per-message and the batched paths: it gives the payload
to apply, or the final DEAD_LETTER :class:`~dj_cqrs.core.messages.Outcome` of a message that must
not be applied (malformed, too large, for an unknown ``cqrs_id``, or expired).
"""

from __future__ import annotations

from typing import Any

from dj_cqrs import encoding
from dj_cqrs.conf import cqrs_settings
from dj_cqrs.core.messages import Action, InboundMessage, Outcome
from dj_cqrs.core.names import direct_queue, original_routing_key
from dj_cqrs.core.payload import TransportPayload
from dj_cqrs.core.reasons import Reason
from dj_cqrs.exceptions import DecodeError, PayloadError
from dj_cqrs.registry import replica_registry


def parse_body(message: InboundMessage, max_bytes: int | None = None) -> Any:
    """The decoded JSON body; raise :class:`DecodeError` (with a reason) when it is not JSON.

    ``max_bytes``: ``replica.max_message_bytes`` when the caller read it already (once per batch);
    None reads the setting."""
    limit = cqrs_settings.replica.max_message_bytes if max_bytes is None else max_bytes
    body = message.body
    if not isinstance(body, (bytes, bytearray, memoryview, str)):
        raise DecodeError(f"body of type {type(body).__name__} is not bytes", reason=Reason.INVALID_BODY)
    size = len(body)
    if limit and size > limit:
        raise PayloadError(
            f"body of {size} bytes exceeds replica.max_message_bytes={limit}", reason=Reason.TOO_LARGE
        )
    try:
        return encoding.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(f"body is not valid UTF-8 JSON: {exc}", reason=Reason.INVALID_JSON) from exc
    except RecursionError as exc:
        raise DecodeError("body is nested too deeply to decode", reason=Reason.INVALID_JSON) from exc
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a malformed body
        raise DecodeError(
            f"body cannot be decoded: {type(exc).__name__}: {exc}", reason=Reason.INVALID_JSON
        ) from exc


def decode(message: InboundMessage) -> TransportPayload:
    """Parse a message into a payload; raise :class:`PayloadError` with a reason."""
    return payload_from(message, parse_body(message))


def payload_from(message: InboundMessage, data: Any) -> TransportPayload:
    """The payload of a decoded body (its direct-sync queue read from the routing key)."""
    if not isinstance(data, dict):
        raise DecodeError(f"body must be a JSON object, got {type(data).__name__}", reason=Reason.NOT_AN_OBJECT)
    cqrs_id = data.get("cqrs_id")
    queue = direct_queue(original_routing_key(message.routing_key, message.headers), cqrs_id) if isinstance(cqrs_id, str) else None
    try:
        return TransportPayload.from_message(data, queue=queue)
    except PayloadError:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. an out-of-range date in ``expires``
        raise PayloadError(f"invalid body: {type(exc).__name__}: {exc}", reason=Reason.INVALID_BODY) from exc


def validate(message: InboundMessage, max_bytes: int | None = None) -> TransportPayload | Outcome:
    """Decode and validate without touching the database.

    Returns the payload to apply, or a DEAD_LETTER outcome for a message that must not be
    applied: malformed, too large, for an unknown ``cqrs_id``, or expired. ``max_bytes``: see
    :func:`parse_body`.
    """
    data: Any = None
    try:
        data = parse_body(message, max_bytes)
        payload = payload_from(message, data)
    except PayloadError as exc:
        return Outcome(Action.DEAD_LETTER, reason=exc.reason, detail=str(exc), exception=exc, raw_cqrs_id=peek_cqrs_id(data))
    if replica_registry.get_model_by_cqrs_id(payload.cqrs_id) is None:
        return Outcome(
            Action.DEAD_LETTER,
            reason=Reason.UNKNOWN_CQRS_ID,
            detail=f"no replica model with CQRS_ID {payload.cqrs_id!r} in this service",
            payload=payload,
        )
    if payload.is_expired():
        return Outcome(
            Action.DEAD_LETTER,
            reason=Reason.EXPIRED,
            detail=f"expired at {payload.expires.isoformat() if payload.expires else ''}",
            payload=payload,
        )
    return payload


def peek_cqrs_id(data: Any) -> str:
    """Best-effort ``cqrs_id`` of a malformed body, for the log line."""
    if isinstance(data, dict):
        cqrs_id = data.get("cqrs_id")
        if isinstance(cqrs_id, str):
            return cqrs_id[:200]
    return ""


__all__ = ["decode", "parse_body", "payload_from", "peek_cqrs_id", "validate"]
