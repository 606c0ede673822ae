"""Worker lifecycle helpers shared by every transport's consume loop: stop flag and back-off."""

from __future__ import annotations

import random
import threading


class StopFlag:
    """Set by signal handlers (SIGTERM/SIGINT) to end a consume loop after the current batch."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when stopped meanwhile."""
        return self._event.wait(max(seconds, 0.0))

    def clear(self) -> None:
        self._event.clear()


class Backoff:
    """Exponential back-off with jitter: 0.5 s, 1 s, 2 s ... capped."""

    def __init__(self, initial: float = 0.5, maximum: float = 30.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self._attempt = 0

    def next(self) -> float:
        delay = min(self.maximum, self.initial * (2**self._attempt))
        self._attempt += 1
        return float(delay * (0.8 + random.random() * 0.4))

    def reset(self) -> None:
        self._attempt = 0


#: The stop flag of this process's consume loop (set by ``cqrs_consume``'s signal handlers).
process_stop = StopFlag()
