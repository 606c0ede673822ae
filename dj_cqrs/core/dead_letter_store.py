"""What a transport implements to support ``cqrs_dead_letters``: a :class:`DeadLetterStore`.

A store hands out sessions; a session gives the letters of the dead-letter queue one at a time,
each held (unacknowledged) until it is acknowledged or the session ends, when the ones not
acknowledged go back to the queue. The operations on letters (list, count, retry, purge) are
written once against this interface, in :mod:`dj_cqrs.replica.dead_letters`.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import functools
import time
from typing import Any

from dj_cqrs import encoding
from dj_cqrs.core.event import is_event_body
from dj_cqrs.core.names import DEAD_UNTIL_HEADER, REASON_HEADER


@dataclasses.dataclass
class DeadLetter:
    body: bytes
    headers: dict[str, Any]
    routing_key: str = ""
    #: Transport handle (delivery tag, kombu message, index ...).
    handle: Any = None
    #: How many letters were still ready in the queue after this one when it was read, as the
    #: broker answered the read itself (None: the transport cannot tell).
    remaining: int | None = None

    @functools.cached_property
    def data(self) -> dict[str, Any] | None:
        """The decoded JSON body, or None when it is not a JSON object."""
        try:
            value = encoding.loads(self.body)
        except Exception:  # noqa: BLE001 - a malformed letter is still a letter
            return None
        return value if isinstance(value, dict) else None

    @property
    def cqrs_id(self) -> str | None:
        """The body's ``cqrs_id``; a domain event's name (``cqrs_dead_letters --cqrs-id`` filters
        both)."""
        data = self.data
        if data is not None and is_event_body(data):
            name = data.get("name")
            return name if isinstance(name, str) else None
        value = data.get("cqrs_id") if data is not None else None
        return value if isinstance(value, str) else None

    @property
    def reason(self) -> str:
        value = self.headers.get(REASON_HEADER)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        return _plain(str(value)) if value else "unknown"

    def expired(self, now: float | None = None) -> bool:
        """Past its ``x-cqrs-dead-until`` (set where the broker has no message TTL)."""
        until = self.headers.get(DEAD_UNTIL_HEADER)
        if isinstance(until, bool) or not isinstance(until, (int, float)):
            return False
        return until <= (time.time() if now is None else now)

    def text(self) -> str:
        return bytes(self.body).decode("utf-8", "backslashreplace")

    def as_json(self) -> str:
        return encoding.dumps(
            {"routing_key": self.routing_key, "headers": _plain(self.headers), "body": self.text()}, allow_nan=True
        )


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if value is None or isinstance(value, (int, float, bool)):
        return value
    return str(value)


class Unroutable(Exception):
    """The broker could not route a re-published letter (no binding for it)."""


class DeadLetterSession(abc.ABC):
    @abc.abstractmethod
    def get(self) -> DeadLetter | None:
        """The next letter, held until acknowledged or the session ends; None when none is left.

        Its :attr:`~DeadLetter.remaining` should be filled where the broker tells, in the same
        answer, how many letters are left: RabbitMQ answers a read after the letters given back
        before it are in the queue again, a separate count (``queue.declare``) possibly before.
        """

    @abc.abstractmethod
    def ack(self, letter: DeadLetter) -> None:
        """Remove ``letter`` from the dead-letter queue."""

    @abc.abstractmethod
    def publish(self, routing_key: str, body: bytes, headers: dict[str, Any]) -> None:
        """Publish (confirmed) to the CQRS exchange; raise :class:`Unroutable` if not routed."""

    @abc.abstractmethod
    def release(self) -> None:
        """Give back every letter still held."""


class DeadLetterStore(abc.ABC):
    @abc.abstractmethod
    def count(self) -> int:
        """How many letters the dead-letter queue holds."""

    @abc.abstractmethod
    def open(self) -> contextlib.AbstractContextManager[DeadLetterSession]:
        """A session; letters not acknowledged go back to the queue when it ends."""

    @abc.abstractmethod
    def purge_all(self) -> int:
        """Delete every letter; return how many."""




__all__ = ["DeadLetter", "DeadLetterSession", "DeadLetterStore", "Unroutable"]
