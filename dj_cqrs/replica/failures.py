"""What a failed message becomes: retried with a delay, dead-lettered, or kept for the database.

* :func:`classify_failure` - RETRY or DEAD_LETTER, as the model's ``should_retry_cqrs`` /
  ``get_cqrs_retry_delay`` hooks decide; data that no retry can fix (:data:`PERMANENT_REASONS`)
  is dead-lettered at once;
* :func:`database_unavailable` - REQUEUE: the database is unreachable, the message waits for it;
* :func:`drop_if_broken` - a usable connection before each apply.
"""

from __future__ import annotations

import contextlib
import logging

from django.db import close_old_connections, connections

from dj_cqrs.core.event import AnyPayload
from dj_cqrs.core.messages import Action, Outcome
from dj_cqrs.core.payload import TransportPayload
from dj_cqrs.core.reasons import Reason
from dj_cqrs.database import connect, is_outage
from dj_cqrs.registry import replica_registry
from dj_cqrs.replica.retry import sanitize_delay

logger = logging.getLogger("django-cqrs.consumer")

#: Failure reasons recorded by the replica manager that no retry can fix.
PERMANENT_REASONS = frozenset(
    {
        Reason.MISSING_CQRS_FIELDS,
        Reason.MISSING_PK,
        Reason.BAD_PK,
        Reason.MISSING_REQUIRED_FIELDS,
        Reason.BAD_MAPPING,
        Reason.UNKNOWN_CQRS_ID,
    }
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


def classify_failure(
    payload: TransportPayload, exc: BaseException | None, reason: str, detail: str | None = None
) -> Outcome:
    """RETRY (with the model's delay) or DEAD_LETTER, as the model's hooks decide. ``detail``
    (``x-cqrs-error``): what failed, when known (default: the exception, else the reason)."""
    if detail is None:
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
                return database_unavailable(payload, hook_error)
            logger.exception("should_retry_cqrs of %s raised; the message is dead-lettered", payload.cqrs_id)
    if retry and model is not None:
        delay = 0.0
        try:
            delay = sanitize_delay(model.get_cqrs_retry_delay(payload.retries))
        except Exception as hook_error:  # noqa: BLE001
            if is_connection_lost(hook_error):
                return database_unavailable(payload, hook_error)
            logger.exception("get_cqrs_retry_delay of %s raised; retrying without delay", payload.cqrs_id)
        return Outcome(Action.RETRY, reason=reason, detail=detail, delay=delay, payload=payload, exception=exc)
    return Outcome(
        Action.DEAD_LETTER,
        reason=Reason.MAX_RETRIES,
        failure=reason,
        detail=detail,
        payload=payload,
        exception=exc,
    )


def database_unavailable(payload: AnyPayload, exc: BaseException) -> Outcome:
    """Keep the message (unacknowledged) until the database is back; drop broken connections."""
    _drop_connections()
    return Outcome(
        Action.REQUEUE,
        reason=Reason.DATABASE_UNAVAILABLE,
        detail=f"{type(exc).__name__}: {exc}",
        payload=payload,
        exception=exc,
    )


def internal_error(exc: BaseException) -> Outcome:
    """The dead letter of a message whose handling failed unexpectedly (a bug): it never kills
    the worker."""
    logger.exception("CQRS message handling failed unexpectedly; the message is dead-lettered")
    return Outcome(
        Action.DEAD_LETTER, reason=Reason.INTERNAL_ERROR, detail=f"{type(exc).__name__}: {exc}", exception=exc
    )


__all__ = [
    "PERMANENT_REASONS",
    "classify_failure",
    "database_unavailable",
    "drop_if_broken",
    "internal_error",
    "is_connection_lost",
]
