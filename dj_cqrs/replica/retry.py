"""Retry policy and failure bookkeeping shared by every transport.

* :func:`default_retry_delay` / :func:`default_should_retry` are what the replica model hooks
  ``get_cqrs_retry_delay(current_retry)`` and ``should_retry_cqrs(current_retry, exception)`` do
  unless a model overrides them: ``replica.CQRS_MAX_RETRIES`` retries, waiting
  ``CQRS_RETRY_DELAY * CQRS_RETRY_BACKOFF ** current_retry`` seconds, capped at
  ``CQRS_RETRY_MAX_DELAY`` (factor 1, the default, is django-cqrs's constant delay).
* :func:`failure_headers` builds the ``x-cqrs-*`` AMQP headers a retried or dead-lettered message
  carries (reason, exception, retry count, first and last failure time, worker host); the body is
  only changed by the ``retries`` counter, so it stays readable by django-cqrs peers.
"""

from __future__ import annotations

import datetime
import math
import os
import socket
from typing import TYPE_CHECKING, Any

from dj_cqrs import encoding
from dj_cqrs.conf import cqrs_settings

if TYPE_CHECKING:
    from dj_cqrs.core.payload import TransportPayload
    from dj_cqrs.replica.consumer import InboundMessage, Outcome

#: No retry waits longer than this, whatever a model hook answers (RabbitMQ TTLs are 32-bit ms).
HARD_MAX_DELAY = 7 * 24 * 3600.0

ROUTING_KEY_HEADER = "x-cqrs-routing-key"
REASON_HEADER = "x-cqrs-reason"
FAILURE_HEADER = "x-cqrs-failure"
ERROR_HEADER = "x-cqrs-error"
EXCEPTION_HEADER = "x-cqrs-exception"
RETRIES_HEADER = "x-cqrs-retries"
FIRST_FAILURE_HEADER = "x-cqrs-first-failure"
LAST_FAILURE_HEADER = "x-cqrs-last-failure"
WORKER_HEADER = "x-cqrs-worker"
QUEUE_HEADER = "x-cqrs-queue"
DELAY_HEADER = "x-cqrs-delay-ms"
#: Epoch seconds before which a retry must not be applied (brokers without message TTLs).
NOT_BEFORE_HEADER = "x-cqrs-not-before"
#: Epoch seconds after which a dead letter is discarded (brokers without message TTLs).
DEAD_UNTIL_HEADER = "x-cqrs-dead-until"

#: Headers describing one failure; dropped when a dead letter is retried by hand.
FAILURE_HEADERS = frozenset(
    {
        REASON_HEADER,
        FAILURE_HEADER,
        ERROR_HEADER,
        EXCEPTION_HEADER,
        RETRIES_HEADER,
        FIRST_FAILURE_HEADER,
        LAST_FAILURE_HEADER,
        WORKER_HEADER,
        QUEUE_HEADER,
        DELAY_HEADER,
        NOT_BEFORE_HEADER,
        DEAD_UNTIL_HEADER,
    }
)
#: Headers RabbitMQ adds when it dead-letters a message (our retry queues); not carried on.
_BROKER_HEADER = "x-death"
_BROKER_HEADER_PREFIXES = ("x-first-death-", "x-last-death-")

_MAX_ERROR_TEXT = 2000


def default_retry_delay(current_retry: int) -> float:
    """Seconds before retry number ``current_retry + 1`` (exponential when configured, capped)."""
    replica = cqrs_settings.replica
    base = float(replica.CQRS_RETRY_DELAY)
    factor = float(replica.CQRS_RETRY_BACKOFF)
    cap = max(float(replica.CQRS_RETRY_MAX_DELAY), base)
    if factor <= 1 or base <= 0:
        return min(base, HARD_MAX_DELAY)
    exponent = max(int(current_retry), 0)
    # factor ** exponent overflows quickly; the cap is reached long before that.
    if exponent * math.log(factor) > math.log(cap / base) + 1:
        return min(cap, HARD_MAX_DELAY)
    return min(base * factor**exponent, cap, HARD_MAX_DELAY)


def default_should_retry(current_retry: int) -> bool:
    """``current_retry < replica.CQRS_MAX_RETRIES`` (None retries forever)."""
    max_retries = cqrs_settings.replica.CQRS_MAX_RETRIES
    return max_retries is None or current_retry < max_retries


def sanitize_delay(value: Any) -> float:
    """A hook's answer as a usable delay: a finite number of seconds in [0, HARD_MAX_DELAY]."""
    try:
        delay = float(value)
    except (TypeError, ValueError):
        return 0.0
    if math.isnan(delay) or delay < 0:
        return 0.0
    return min(delay, HARD_MAX_DELAY)


def utc_now_text() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def carried_headers(headers: dict[str, Any] | None) -> dict[str, Any]:
    """A message's headers without the ones RabbitMQ adds when it dead-letters a message."""
    return {
        key: value
        for key, value in (headers or {}).items()
        if not (key == _BROKER_HEADER or key.startswith(_BROKER_HEADER_PREFIXES))
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
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def retry_body(payload: TransportPayload) -> bytes:
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
    from dj_cqrs.replica.consumer import Action, Outcome

    return Outcome(
        Action.DEAD_LETTER,
        reason="internal_error",
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
    "DEAD_UNTIL_HEADER",
    "FAILURE_HEADERS",
    "NOT_BEFORE_HEADER",
    "REASON_HEADER",
    "ROUTING_KEY_HEADER",
    "carried_headers",
    "default_retry_delay",
    "default_should_retry",
    "failure_headers",
    "header_text",
    "minimal_failure_headers",
    "retry_body",
    "settle_failed",
]
