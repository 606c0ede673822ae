"""Handling received domain events: the consume handler of the events route.

``cqrs_consume`` workers receive domain events on the same queue as model events (the queue is
bound with each handler pattern, see :mod:`.registry`); :func:`accepts` picks them out of a batch
and :func:`handle_events_through_outages` decides each one:

* malformed (``bad_event`` ...), too large or expired: dead-lettered at once, nothing runs;
* no handler of this service matches its name (a binding left by a removed handler):
  acknowledged, status ``no_handler``;
* otherwise each matching handler runs once (see :func:`run_handler`); the message is acknowledged
  when every handler succeeded or had handled it before; a handler raising
  :class:`~dj_cqrs.exceptions.Permanent` dead-letters it at once (reason ``permanent``); any other
  exception retries it with the replica retry policy (``replica.CQRS_MAX_RETRIES``,
  ``CQRS_RETRY_DELAY``, ``CQRS_RETRY_BACKOFF`` ...), then dead-letters it (``max_retries``). The
  handlers that succeeded are in the inbox: a retry or a replayed dead letter runs only the others;
* the handler's database is unreachable: the message is held (``REQUEUE``) until it is back.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence

from django.db import transaction

from dj_cqrs.conf import cqrs_settings
from dj_cqrs.core.event import BODY_PREFIX, EventPayload
from dj_cqrs.core.messages import Action, InboundMessage, Outcome
from dj_cqrs.core.names import EVENT_ROUTING_PREFIX, event_name_of, original_routing_key
from dj_cqrs.core.reasons import Reason, Status
from dj_cqrs.database import hold_through_outages, is_outage
from dj_cqrs.events import inbox
from dj_cqrs.events.registry import Handler, handlers, matching
from dj_cqrs.exceptions import DatabaseUnavailable, PayloadError, Permanent
from dj_cqrs.replica.decoding import parse_body
from dj_cqrs.replica.failures import database_unavailable, drop_if_broken, internal_error
from dj_cqrs.replica.outcome_log import log_outcome
from dj_cqrs.replica.retry import default_retry_delay, default_should_retry

logger = logging.getLogger("django-cqrs.events")

#: What :func:`run_handler` reports.
RAN = "ran"
DUPLICATE = "duplicate"
STALE = "stale"


def accepts(message: InboundMessage) -> bool:
    """Whether a delivery is a domain event: by its (original) routing key, or by its body."""
    routing_key = original_routing_key(message.routing_key, message.headers)
    if routing_key.startswith(EVENT_ROUTING_PREFIX) or event_name_of(routing_key) is not None:
        return True
    body = message.body
    return isinstance(body, (bytes, bytearray)) and bytes(body[: len(BODY_PREFIX)]) == BODY_PREFIX


def decode(message: InboundMessage, max_bytes: int | None) -> EventPayload | Outcome:
    """The event of a message, or its final DEAD_LETTER outcome (malformed, too large, expired)."""
    try:
        event = EventPayload.from_message(parse_body(message, max_bytes))
    except PayloadError as exc:
        return Outcome(Action.DEAD_LETTER, reason=exc.reason, detail=str(exc), exception=exc)
    if event.is_expired():
        expires = event.expires.isoformat() if event.expires else ""
        return Outcome(Action.DEAD_LETTER, reason=Reason.EXPIRED, detail=f"expired at {expires}", payload=event)
    return event


class WaitingForOlder(Exception):
    """An ``ordered`` handler holds an event while an older one of its key is being retried."""


def run_handler(handler: Handler, event: EventPayload) -> str:
    """Run ``handler`` for ``event`` unless it has done so: ``ran``, ``duplicate`` or ``stale``.

    Atomic handlers run in one transaction with their inbox row (and, when ``ordered``, their
    position in the key): exactly once. The others run outside a transaction and are recorded
    after they return: at least once. Raises what the handler raises, and
    :class:`WaitingForOlder` for an ordered handler whose older event of the key is retried."""
    using = handler.using
    drop_if_broken(using)
    given = event.with_changes(data=copy.deepcopy(event.data), meta=copy.deepcopy(event.meta))
    if not handler.atomic:
        if inbox.handled(using, handler.name, event.id):
            return DUPLICATE
        handler.fn(given)
        inbox.claim(using, handler.name, event)
        return RAN
    with transaction.atomic(using=using):
        if not inbox.claim(using, handler.name, event):
            return DUPLICATE
        if handler.ordered:
            step = inbox.advance(using, handler.name, event)
            if step == inbox.STALE:
                inbox.mark_stale(using, handler.name, event.id)
                return STALE
            if step == inbox.WAIT:
                raise WaitingForOlder(f"an older event of key {event.key!r} is being retried")
        handler.fn(given)
    return RAN


def handle_event(event: EventPayload) -> Outcome:
    """Run every handler of ``event`` and decide what becomes of its message."""
    handlers = matching(event.name)
    if not handlers:
        return Outcome(Action.ACK, payload=event, status=Status.NO_HANDLER)
    results: list[str] = []
    failures: list[tuple[Handler, BaseException]] = []
    for handler in handlers:
        try:
            results.append(run_handler(handler, event))
        except Exception as exc:  # noqa: BLE001 - classified below; one handler never stops the others
            if isinstance(exc, DatabaseUnavailable) or is_outage(exc):
                return database_unavailable(event, exc)
            if not isinstance(exc, WaitingForOlder):
                logger.warning(
                    "CQRS event handler %s failed on %s %s: %r", handler.name, event.name, event.id, exc, exc_info=exc
                )
            failures.append((handler, exc))
    if failures:
        outcome = _failed(event, failures)
        _mark_ordered(event, failures, retried=outcome.action is Action.RETRY)
        return outcome
    if RAN in results:
        status = Status.APPLIED
    else:
        status = Status.IGNORED_STALE if STALE in results else Status.IGNORED_DUPLICATE
    return Outcome(Action.ACK, payload=event, status=status)


def _failed(event: EventPayload, failures: list[tuple[Handler, BaseException]]) -> Outcome:
    """The outcome of an event some handlers failed on: the first ``Permanent`` one dead-letters it
    at once, else the first failure retries it (or dead-letters it after the last retry)."""
    handler, exc = next(((h, e) for h, e in failures if isinstance(e, Permanent)), failures[0])
    detail = f"handler {handler.name}: {type(exc).__name__}: {exc}"
    if isinstance(exc, Permanent):
        return Outcome(Action.DEAD_LETTER, reason=Reason.PERMANENT, detail=detail, payload=event, exception=exc)
    reason = Reason.WAITING_FOR_OLDER if isinstance(exc, WaitingForOlder) else Reason.EXCEPTION
    if default_should_retry(event.retries):
        delay = default_retry_delay(event.retries)
        return Outcome(Action.RETRY, reason=reason, detail=detail, delay=delay, payload=event, exception=exc)
    return Outcome(Action.DEAD_LETTER, reason=Reason.MAX_RETRIES, failure=reason, detail=detail, payload=event, exception=exc)


def _mark_ordered(event: EventPayload, failures: list[tuple[Handler, BaseException]], retried: bool) -> None:
    """Ordered handlers that failed on ``event``: newer events of its key wait while it is retried,
    and stop waiting once it is dead-lettered."""
    for handler, exc in failures:
        if not handler.ordered or isinstance(exc, WaitingForOlder):
            continue
        try:
            if retried:
                inbox.hold_newer(handler.using, handler.name, event)
            else:
                inbox.release_newer(handler.using, handler.name, event)
        except Exception as error:  # noqa: BLE001 - the order then degrades to skipping, never stops
            logger.warning("CQRS ordered handler %s: recording the retry of %s failed: %r", handler.name, event.id, error)


def handle_events(messages: Sequence[InboundMessage], tick: Callable[[], None] | None = None) -> list[Outcome]:
    """One outcome per message, in order; never raises."""
    max_bytes = cqrs_settings.replica.max_message_bytes
    for using in {h.using for h in handlers()}:
        try:
            inbox.prune_if_due(using)
        except Exception as exc:  # noqa: BLE001 - pruning is housekeeping
            logger.warning("CQRS inbox pruning failed on %s: %r", using, exc)
    outcomes: list[Outcome] = []
    for message in messages:
        try:
            checked = decode(message, max_bytes)
            outcome = checked if isinstance(checked, Outcome) else handle_event(checked)
        except Exception as exc:  # noqa: BLE001 - last line of defence: a message never kills the worker
            outcome = internal_error(exc)
        outcomes.append(log_outcome(outcome, message))
        if tick is not None:
            tick()
    return outcomes


def handle_events_through_outages(
    messages: Sequence[InboundMessage],
    wait: Callable[[float], bool] | None,
    tick: Callable[[], None] | None = None,
) -> list[Outcome]:
    """The events route's :class:`~dj_cqrs.core.messages.ConsumeHandler`: :func:`handle_events`,
    holding the events that met a database outage until the database is back."""
    return hold_through_outages(lambda batch: handle_events(batch, tick), messages, wait, "Event handler database", logger)


__all__ = ["accepts", "decode", "handle_event", "handle_events", "handle_events_through_outages", "run_handler"]
