"""Dead letters: list (non-destructively), count, retry and purge them (``cqrs_dead_letters``).

The operations are written once against the small
:class:`~dj_cqrs.core.dead_letter_store.DeadLetterStore` interface that each transport implements
(RabbitMQ, kombu, and the in-memory transport for tests):

* a *session* hands out the letters one at a time, each held (unacknowledged) until the session
  ends, when the ones not acknowledged go back to the queue. No prefetch window is involved, so
  reading more letters than any prefetch never blocks, and at most the number of letters present
  when the session read its first letter is read, so letters arriving meanwhile cannot make it
  loop forever;
* ``retry`` re-publishes a letter to this replica's queue only (routing key
  ``cqrs.<queue>.<cqrs_id>``), with ``retries`` reset to 0 and a fresh ``expires`` from
  ``master.CQRS_MESSAGE_TTL``; the master's original routing key travels in
  ``x-cqrs-routing-key``, so a direct sync stays direct. The letter is acknowledged only after
  the broker confirmed the re-publish.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any

from dj_cqrs import encoding
from dj_cqrs.conf import cqrs_settings
from dj_cqrs.core.dead_letter_store import (
    DeadLetter,
    DeadLetterSession,
    DeadLetterStore,
    Unroutable,
)
from dj_cqrs.core.event import AnyPayload, EventPayload, is_event_body
from dj_cqrs.core.names import FAILURE_HEADERS, ROUTING_KEY_HEADER, direct_routing_key
from dj_cqrs.core.payload import TransportPayload, message_expiration
from dj_cqrs.core.settlement import carried_headers
from dj_cqrs.exceptions import ConfigurationError, PayloadError
from dj_cqrs.registry import replica_registry
from dj_cqrs.transport.base import BaseTransport


@dataclasses.dataclass
class Report:
    """What a ``retry`` or ``purge`` did."""

    done: int = 0
    matched: int = 0
    malformed: int = 0
    unknown: int = 0
    unroutable: int = 0
    expired: int = 0


def store_for(transport: BaseTransport) -> DeadLetterStore:
    """The dead-letter store of a transport; ConfigurationError if it keeps none."""
    factory: Callable[[], DeadLetterStore] | None = getattr(transport, "dead_letter_store", None)
    if factory is None:
        raise ConfigurationError(f"the transport {type(transport).__name__} keeps no dead letters")
    return factory()


#: Selects letters beyond ``cqrs_id`` (the admin's reason filter and selection).
Where = Callable[[DeadLetter], bool]


def _matches(letter: DeadLetter, cqrs_id: str | None, where: Where | None = None) -> bool:
    return (cqrs_id is None or letter.cqrs_id == cqrs_id) and (where is None or where(letter))


def _present(store: DeadLetterStore, session: DeadLetterSession) -> Iterator[DeadLetter]:
    """Every letter in the queue when the session read its first one, then stop.

    The bound is the number of letters left that the broker gave with the first letter, taken
    in order with the letters a session that just ended gave back. A separate count
    (``store.count()``, a ``queue.declare``) is not: RabbitMQ answers it ahead of a requeue it
    is still applying, so a ``dump`` right after a ``summary`` of 10,000 letters counted (and
    read) only 1,100 to 1,800 of them. Letters that arrive meanwhile are not read, so a steady
    stream of new dead letters cannot make a session loop forever.
    """
    letter = session.get()
    if letter is None:
        return
    left = letter.remaining if letter.remaining is not None else store.count()
    yield letter
    while left > 0:
        letter = session.get()
        if letter is None:
            return
        left -= 1
        yield letter


def browse(
    store: DeadLetterStore, cqrs_id: str | None = None, limit: int | None = None, where: Where | None = None
) -> Iterator[DeadLetter]:
    """Yield letters (matching ``cqrs_id`` and ``where``) without removing any; at most ``limit``."""
    if limit is not None and limit <= 0:
        return
    with store.open() as session:
        shown = 0
        for letter in _present(store, session):
            if _matches(letter, cqrs_id, where):
                yield letter
                shown += 1
                if limit is not None and shown >= limit:
                    break


def count(store: DeadLetterStore, cqrs_id: str | None = None) -> int:
    if cqrs_id is None:
        return store.count()
    return sum(1 for _ in browse(store, cqrs_id))


def summary(store: DeadLetterStore, cqrs_id: str | None = None) -> dict[tuple[str, str], int]:
    """Letters per ``(cqrs_id, reason)``; malformed bodies are counted under cqrs_id ``?``."""
    result: dict[tuple[str, str], int] = {}
    for letter in browse(store, cqrs_id):
        key = (letter.cqrs_id or "?", letter.reason)
        result[key] = result.get(key, 0) + 1
    return result


def retry_message(letter: DeadLetter, queue: str) -> tuple[str, bytes, dict[str, Any]]:
    """Routing key, body and headers that give ``letter`` a new start on ``queue``.

    Raises :class:`PayloadError` for a body that is not a valid CQRS payload (not JSON, a string
    with a lone surrogate, invalid fields) or cannot be encoded again.
    """
    data = letter.data
    if data is None:
        raise PayloadError("the body is not a JSON object", reason="malformed")
    try:
        payload: AnyPayload = EventPayload.from_message(data) if is_event_body(data) else TransportPayload.from_message(data)
        fresh = payload.with_changes(retries=0, expires=message_expiration())
        # NaN and the infinities are written back as they came (django-cqrs writes them too).
        body = encoding.dumps_bytes(encoding.restore_exact(fresh.to_dict()), allow_nan=True)
    except PayloadError:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. an out-of-range date in ``expires``
        raise PayloadError(f"invalid body: {type(exc).__name__}: {exc}", reason="malformed") from exc
    headers = {k: v for k, v in carried_headers(letter.headers).items() if k not in FAILURE_HEADERS}
    original = headers.get(ROUTING_KEY_HEADER)
    if not isinstance(original, str) or not original:
        # A django-cqrs dead letter: the master's routing key is lost; treat it as a broadcast.
        headers[ROUTING_KEY_HEADER] = payload.cqrs_id
    return direct_routing_key(queue, payload.cqrs_id), body, headers


def _select(
    store: DeadLetterStore,
    cqrs_id: str | None,
    limit: int | None,
    action: Callable[[DeadLetterSession, DeadLetter, Report], None],
    where: Where | None = None,
) -> Report:
    report = Report()
    if limit is not None and limit <= 0:
        return report
    now = time.time()
    with store.open() as session:
        for letter in _present(store, session):
            if letter.expired(now):
                session.ack(letter)  # past its dead-letter TTL: the broker would have dropped it
                report.expired += 1
                continue
            if not _matches(letter, cqrs_id, where):
                continue
            report.matched += 1
            action(session, letter, report)
            if limit is not None and report.matched >= limit:
                break
    return report


def retry(
    store: DeadLetterStore, cqrs_id: str | None = None, limit: int | None = None, where: Where | None = None
) -> Report:
    """Re-publish matching letters to this replica's queue; each is removed once confirmed."""
    queue = cqrs_settings.queue
    if not queue:
        raise ConfigurationError("dj_cqrs.E006: CQRS['queue'] is required to retry dead letters")

    def do(session: DeadLetterSession, letter: DeadLetter, report: Report) -> None:
        try:
            routing_key, body, headers = retry_message(letter, queue)
        except PayloadError:
            report.malformed += 1
            return
        if letter.cqrs_id not in replica_registry and not is_event_body(letter.data):
            # (a domain event without a handler here is unroutable: no binding on the queue)
            report.unknown += 1
            return
        try:
            session.publish(routing_key, body, headers)
        except Unroutable:
            report.unroutable += 1
            return
        session.ack(letter)
        report.done += 1

    return _select(store, cqrs_id, limit, do, where)


def purge(
    store: DeadLetterStore, cqrs_id: str | None = None, limit: int | None = None, where: Where | None = None
) -> Report:
    """Delete matching letters (all of them without a filter)."""
    if cqrs_id is None and limit is None and where is None:
        removed = store.purge_all()
        return Report(done=removed, matched=removed)

    def do(session: DeadLetterSession, letter: DeadLetter, report: Report) -> None:
        session.ack(letter)
        report.done += 1

    return _select(store, cqrs_id, limit, do, where)
