"""The one structured log line per message (``django-cqrs.consumer``) that says what happened to it."""

from __future__ import annotations

import logging

from dj_cqrs.core.messages import Action, InboundMessage, Outcome
from dj_cqrs.core.names import original_routing_key
from dj_cqrs.core.reasons import Status
from dj_cqrs.log import describe, payload_context

logger = logging.getLogger("django-cqrs.consumer")


#: How the log line words each status.
STATUS_TEXT: dict[str, str] = {
    Status.APPLIED: "applied",
    Status.IGNORED_STALE: "ignored (stale revision)",
    Status.IGNORED_DUPLICATE: "ignored (duplicate revision)",
    Status.IGNORED_BROADCAST_SYNC: "ignored (broadcast sync, CQRS_ONLY_DIRECT_SYNCS)",
    Status.IGNORED_DELETED: "ignored (the object was deleted later: tombstone)",
    Status.IGNORED_STALE_DELETE: "ignored (delete older than the stored object)",
    Status.NO_HANDLER: "ignored (no event handler of this service matches)",
}

#: The level of the line of each action.
LEVELS = {
    Action.ACK: logging.INFO,
    Action.RETRY: logging.WARNING,
    Action.REQUEUE: logging.DEBUG,  # the transport logs the outage once, not every held message
    Action.DEAD_LETTER: logging.ERROR,
}


def log_outcome(outcome: Outcome, message: InboundMessage | None = None) -> Outcome:
    """Log the one line that says what happened to a message; returns ``outcome``."""
    level = LEVELS[outcome.action]
    if not logger.isEnabledFor(level):
        return outcome
    payload = outcome.payload
    routing_key = original_routing_key(message.routing_key, message.headers) if message is not None else ""
    common = {
        "cqrs_outcome": outcome.action.value,
        "cqrs_status": str(outcome.status) if outcome.action is Action.ACK else "",
        "cqrs_reason": str(outcome.reason),
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
        logger.info("CQRS %s: %s", STATUS_TEXT.get(outcome.status, outcome.status), text, extra=extra)
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


__all__ = ["LEVELS", "STATUS_TEXT", "log_outcome"]
