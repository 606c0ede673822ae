"""An in-memory transport for unit tests (ours and yours).

Messages are encoded exactly as on a real broker, kept in a list, and applied to this process's
replica models by :meth:`MemoryTransport.join` through the same handler a real consumer uses
(decode → validate → apply → retry/dead-letter). Retries are run without waiting. The transport
is the stub broker, with its own dead-letter store (:class:`MemoryDeadLetterStore`).

Use it with ``CQRS = {'transport': 'dj_cqrs.transport.memory.MemoryTransport', ...}`` or
:func:`dj_cqrs.testing.use_memory_transport`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterator
from typing import Any

from dj_cqrs import encoding
from dj_cqrs.conf import cqrs_settings
from dj_cqrs.core.dead_letter_store import DeadLetter, DeadLetterSession, DeadLetterStore
from dj_cqrs.core.event import BODY_PREFIX, AnyPayload, EventPayload
from dj_cqrs.core.handlers import default_handler
from dj_cqrs.core.messages import Action, ConsumeHandler, InboundMessage, Outcome
from dj_cqrs.core.names import (
    REASON_HEADER,
    ROUTING_KEY_HEADER,
    direct_queue,
    original_routing_key,
    routing_key_for,
)
from dj_cqrs.core.payload import TransportPayload
from dj_cqrs.core.settlement import retry_body, settle_failed
from dj_cqrs.exceptions import PublishFailed
from dj_cqrs.tracing import headers_of
from dj_cqrs.transport.base import BaseTransport
from dj_cqrs.transport.observe import dead_lettered, handle_observed


@dataclasses.dataclass
class StoredMessage:
    routing_key: str
    body: bytes
    headers: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def data(self) -> Any:
        return encoding.loads(self.body)

    @property
    def payload(self) -> TransportPayload:
        """The body as a payload (``queue`` set for a direct sync, as a replica reads it)."""
        data = self.data
        cqrs_id = data.get("cqrs_id") if isinstance(data, dict) else None
        routing_key = original_routing_key(self.routing_key, self.headers)
        queue = direct_queue(routing_key, cqrs_id) if isinstance(cqrs_id, str) else None
        return TransportPayload.from_message(data, queue=queue)

    @property
    def is_event(self) -> bool:
        """Whether the message is a domain event (``dj_cqrs.events.emit``)."""
        return bytes(self.body).startswith(BODY_PREFIX)


class DeadLetterError(AssertionError):
    """Raised by ``join(fail_fast=True)`` when a message was dead-lettered."""


class MemoryTransport(BaseTransport):
    """Keeps messages in memory; ``join()`` applies them to local replica models."""

    supports_confirms = True
    supports_dead_letters = True
    background_publish = False

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.messages: list[StoredMessage] = []
        self.published: list[StoredMessage] = []
        self.dead_letters: list[tuple[StoredMessage, Outcome]] = []
        self.outcomes: list[Outcome] = []
        #: Set to an exception instance to make ``produce`` fail (tests of failure paths).
        self.fail_with: BaseException | None = None

    def produce(self, payload: AnyPayload) -> None:
        if self.fail_with is not None:
            raise PublishFailed(str(self.fail_with)) from self.fail_with
        message = StoredMessage(
            routing_key_for(payload), encoding.dumps_bytes(payload.to_dict(), allow_nan=True), headers_of(payload) or {}
        )
        with self._lock:
            self.messages.append(message)
            self.published.append(message)

    def send_raw(self, body: bytes, routing_key: str = "", headers: dict[str, Any] | None = None) -> None:
        """Queue arbitrary bytes, as a broker would deliver them (for malformed-input tests)."""
        with self._lock:
            self.messages.append(StoredMessage(routing_key, body, dict(headers or {})))

    def consume(self, *args: Any, handler: ConsumeHandler | None = None, **kwargs: Any) -> None:
        self.join(handler=handler)

    def join(self, fail_fast: bool = False, max_rounds: int = 1000, handler: ConsumeHandler | None = None) -> int:
        """Apply queued messages (and their retries) until none is left; return how many.

        ``handler`` decides what becomes of each message (default: the replica's, see
        :func:`dj_cqrs.core.handlers.default_handler`). Nothing waits: a message that meets a
        database outage (``REQUEUE``) is queued again for the next round."""
        handle = handler if handler is not None else default_handler()
        handled = 0
        for _ in range(max_rounds):
            with self._lock:
                batch, self.messages = self.messages, []
            if not batch:
                return handled
            inbound = [InboundMessage(m.body, m.routing_key, m.headers) for m in batch]
            outcomes = handle_observed(handle, inbound, None, None, queue=cqrs_settings.queue or "", system="memory")
            for message, outcome in zip(batch, outcomes, strict=True):
                handled += 1
                self.outcomes.append(outcome)
                try:
                    self._settle(message, outcome)
                except Exception as exc:  # noqa: BLE001 - as the real consumers: the original is dead-lettered
                    outcome = settle_failed(outcome, exc)
                    dead_lettered(outcome)
                    with self._lock:
                        self.dead_letters.append((message, outcome))
                if outcome.action is Action.DEAD_LETTER and fail_fast:
                    raise DeadLetterError(f"dead-lettered: {outcome.reason} ({outcome.detail})")
        raise RuntimeError(f"MemoryTransport.join did not settle after {max_rounds} rounds")

    def _settle(self, message: StoredMessage, outcome: Outcome) -> None:
        """Queue the retry (with ``retries + 1``, as the real transports) or keep the dead letter."""
        if outcome.action is Action.RETRY and outcome.payload is not None:
            headers = dict(message.headers)
            headers.setdefault(ROUTING_KEY_HEADER, message.routing_key)
            successor = StoredMessage(message.routing_key, retry_body(outcome.payload), headers)
            with self._lock:
                self.messages.append(successor)
        elif outcome.action is Action.REQUEUE:
            with self._lock:
                self.messages.append(message)
        elif outcome.action is Action.DEAD_LETTER:
            with self._lock:
                self.dead_letters.append((message, outcome))

    def dead_letter_store(self) -> MemoryDeadLetterStore:
        return MemoryDeadLetterStore(self)

    def reset(self) -> None:
        with self._lock:
            self.messages.clear()
            self.published.clear()
            self.dead_letters.clear()
            self.outcomes.clear()
            self.fail_with = None

    @property
    def payloads(self) -> list[TransportPayload]:
        """Every published model event, decoded from its body."""
        return [m.payload for m in self.published if not m.is_event]

    @property
    def events(self) -> list[EventPayload]:
        """Every published domain event, decoded from its body."""
        return [EventPayload.from_message(m.data) for m in self.published if m.is_event]


class _MemorySession(DeadLetterSession):
    def __init__(self, transport: MemoryTransport) -> None:
        self.transport = transport
        self.position = 0
        self.taken: list[Any] = []

    def get(self) -> DeadLetter | None:
        letters = self.transport.dead_letters
        if self.position >= len(letters):
            return None
        entry = letters[self.position]
        self.position += 1
        stored, outcome = entry
        headers = dict(stored.headers)
        headers.setdefault(REASON_HEADER, getattr(outcome, "reason", "") or "unknown")
        if stored.routing_key:
            headers.setdefault(ROUTING_KEY_HEADER, stored.routing_key)
        return DeadLetter(stored.body, headers, stored.routing_key, handle=entry, remaining=len(letters) - self.position)

    def ack(self, letter: DeadLetter) -> None:
        self.taken.append(letter.handle)

    def publish(self, routing_key: str, body: bytes, headers: dict[str, Any]) -> None:
        self.transport.send_raw(body, routing_key, headers)

    def release(self) -> None:
        taken = {id(entry) for entry in self.taken}
        self.transport.dead_letters[:] = [e for e in self.transport.dead_letters if id(e) not in taken]


class MemoryDeadLetterStore(DeadLetterStore):
    """The dead letters a :class:`MemoryTransport` keeps (``transport.dead_letters``)."""

    def __init__(self, transport: MemoryTransport) -> None:
        self.transport = transport

    def count(self) -> int:
        return len(self.transport.dead_letters)

    @contextlib.contextmanager
    def open(self) -> Iterator[DeadLetterSession]:
        session = _MemorySession(self.transport)
        try:
            yield session
        finally:
            session.release()

    def purge_all(self) -> int:
        removed = len(self.transport.dead_letters)
        self.transport.dead_letters.clear()
        return removed
