"""A bounded in-memory queue of delayed messages, for transports that hold messages until their ETA.

django-cqrs's ``dj_cqrs.delay`` (re-exported there). dj_cqrs's own transports keep retries on the
broker (see docs/failure-handling.md); custom transports written against django-cqrs use this one.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import queue
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from django.utils import timezone


class InvalidMaxSize(ValueError, AssertionError):
    """``DelayQueue(max_size=...)`` not a positive int; an ``AssertionError`` as django-cqrs raised."""


class NotADelayMessage(TypeError, AssertionError):
    """``DelayQueue.put()`` of something else; an ``AssertionError`` as django-cqrs raised."""


@dataclasses.dataclass
class DelayMessage:
    """A message held until ``eta``."""

    delivery_tag: Any
    payload: Any
    eta: datetime


class DelayQueue:
    """Messages ordered by ETA, at most ``max_size`` of them (None: unbounded)."""

    def __init__(self, max_size: int | None = None) -> None:
        if max_size is not None and max_size <= 0:
            raise InvalidMaxSize("Delay queue max_size should be positive integer.")
        self._max_size = max_size
        self._heap: list[tuple[datetime, int, DelayMessage]] = []
        self._seq = itertools.count()

    def get(self) -> DelayMessage:
        """Remove and return the message with the earliest ETA (IndexError when empty)."""
        return heapq.heappop(self._heap)[2]

    def get_ready(self) -> Iterator[DelayMessage]:
        """Yield the messages whose ETA has passed, earliest first, removing each one as it is
        yielded (a generator, as django-cqrs's: messages not iterated over stay queued)."""
        while self._heap and self._heap[0][0] <= timezone.now():
            yield heapq.heappop(self._heap)[2]

    def put(self, delay_message: DelayMessage) -> None:
        """Add a message; ``queue.Full`` when the queue holds ``max_size`` messages already."""
        if not isinstance(delay_message, DelayMessage):
            raise NotADelayMessage(f"DelayQueue holds DelayMessage objects, not {type(delay_message).__name__}")
        if self.full():
            raise queue.Full("Delay queue is full")
        heapq.heappush(self._heap, (delay_message.eta, next(self._seq), delay_message))

    def qsize(self) -> int:
        return len(self._heap)

    def full(self) -> bool:
        return self._max_size is not None and len(self._heap) >= self._max_size


__all__ = ["DelayMessage", "DelayQueue", "InvalidMaxSize", "NotADelayMessage"]
