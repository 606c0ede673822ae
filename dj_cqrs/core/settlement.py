"""What a transport writes when it carries out an :class:`~dj_cqrs.core.messages.Outcome`.

* :func:`retry_body` - the body of the next attempt (the same event, ``retries + 1``);
* :func:`failure_headers` - the ``x-cqrs-*`` headers a retried or dead-lettered message carries
  (reason, exception, retry count, first and last failure time, worker host); the body is only
  changed by the ``retries`` counter, so it stays readable by django-cqrs peers;
* :func:`settle_failed` - what a message becomes when its outcome could not be carried out.
"""

from __future__ import annotations

import datetime
import os
import socket
from typing import Any

from dj_cqrs import encoding
from dj_cqrs.conf import cqrs_settings
from dj_cqrs.core.event import EventPayload
from dj_cqrs.core.messages import Action, InboundMessage, Outcome
from dj_cqrs.core.names import (
    BROKER_DEATH_HEADER,
    BROKER_DEATH_HEADER_PREFIXES,
    DELAY_HEADER,
    ERROR_HEADER,
    EXCEPTION_HEADER,
    FAILURE_HEADER,
    FIRST_FAILURE_HEADER,
    LAST_FAILURE_HEADER,
    NOT_BEFORE_HEADER,
    QUEUE_HEADER,
    REASON_HEADER,
    RETRIES_HEADER,
    ROUTING_KEY_HEADER,
    WORKER_HEADER,
)
from dj_cqrs.core.payload import TransportPayload
from dj_cqrs.core.reasons import Reason

_MAX_ERROR_TEXT = 2000


def utc_now_text() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def carried_headers(headers: dict[str, Any] | None) -> dict[str, Any]:
    """A message's headers without the ones RabbitMQ adds when it dead-letters a message."""
    return {
        key: value
        for key, value in (headers or {}).items()
        if not (key == BROKER_DEATH_HEADER or key.startswith(BROKER_DEATH_HEADER_PREFIXES))
    }


def failure_headers(message: InboundMessage, outcome: Outcome) -> dict[str, Any]:
    """Headers for a retried or dead-lettered copy of ``message`` (its body stays compatible)."""
    now = utc_now_text()
    headers = carried_headers(message.headers)
    original_rk = headers.get(ROUTING_KEY_HEADER)
    if not isinstance(original_rk, str) or not original_rk:
        headers[ROUTING_KEY_HEADER] = header_text(message.routing_key or "")
    if not isinstance(headers.get(FIRST_FAILURE_HEADER), str):
        headers[FIRST_FAILURE_HEADER] = now
    headers[LAST_FAILURE_HEADER] = now
    headers[REASON_HEADER] = header_text(outcome.reason)
    headers[FAILURE_HEADER] = header_text(outcome.failure or outcome.reason)
    headers[ERROR_HEADER] = header_text((outcome.detail or outcome.reason)[:_MAX_ERROR_TEXT])
    if outcome.exception is not None:
        exc_type = type(outcome.exception)
        headers[EXCEPTION_HEADER] = f"{exc_type.__module__}.{exc_type.__qualname__}"
    else:
        headers.pop(EXCEPTION_HEADER, None)
    headers[RETRIES_HEADER] = outcome.payload.retries if outcome.payload is not None else 0
    headers[WORKER_HEADER] = worker_id()
    headers[QUEUE_HEADER] = cqrs_settings.queue or ""
    headers.pop(NOT_BEFORE_HEADER, None)
    headers.pop(DELAY_HEADER, None)
    return headers


def header_text(text: str) -> str:
    """``text`` as valid Unicode (a lone surrogate, e.g. quoted from bad input, is escaped): AMQP
    headers are UTF-8."""
    if text.isascii():
        return str.__str__(text)  # a plain str, also for a Reason member
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def retry_body(payload: TransportPayload | EventPayload) -> bytes:
    """The body of the next attempt: the same event with ``retries + 1`` (exact decimals kept).

    django-cqrs consumers sharing the queue read ``retries`` from the body, so the body is encoded
    again rather than sent as received. That is safe for anything :func:`dj_cqrs.encoding.loads`
    accepted: NaN and the infinities are written back as they came, and strings with a lone
    surrogate were refused there. Should it fail all the same, the caller dead-letters the
    original bytes (see the consumers' settle step).
    """
    next_try = payload.with_changes(retries=payload.retries + 1)
    return encoding.dumps_bytes(encoding.restore_exact(next_try.to_dict()), allow_nan=True)


def settle_failed(outcome: Outcome, exc: BaseException) -> Outcome:
    """What a message becomes when its outcome could not be carried out (e.g. its retry body
    could not be built): a dead letter of its original body, reason ``internal_error``, so that
    one message never holds up the others of its batch."""
    return Outcome(
        Action.DEAD_LETTER,
        reason=Reason.INTERNAL_ERROR,
        failure=outcome.failure or outcome.reason or outcome.action.value,
        detail=f"settling the {outcome.action.value} outcome failed: {type(exc).__name__}: {exc}",
        payload=outcome.payload,
        exception=exc,
    )


def minimal_failure_headers(outcome: Outcome) -> dict[str, Any]:
    """Only the reason and error: for a dead letter whose full headers could not be published."""
    return {
        REASON_HEADER: header_text(outcome.reason),
        ERROR_HEADER: header_text((outcome.detail or outcome.reason)[:_MAX_ERROR_TEXT]),
        WORKER_HEADER: worker_id(),
    }


def dead_letter_ttl() -> int | None:
    """``replica.dead_message_ttl`` in seconds (None: dead letters never expire)."""
    ttl = cqrs_settings.replica.dead_message_ttl
    return int(ttl) if ttl else None


__all__ = [
    "carried_headers",
    "dead_letter_ttl",
    "failure_headers",
    "header_text",
    "minimal_failure_headers",
    "retry_body",
    "settle_failed",
]
