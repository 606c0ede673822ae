"""Lifecycle helpers of long-running loops (consume loops, the outbox relay): the stop flag, back-off,
and the watch that stops a supervised worker whose supervisor is gone."""

from __future__ import annotations

import logging
import multiprocessing
import os
import random
import threading
from multiprocessing.connection import wait

logger = logging.getLogger("django-cqrs.worker")


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


#: The stop flag of this process's consume loop (set by the worker's signal handlers).
process_stop = StopFlag()


def stop_when_orphaned(stop: StopFlag) -> None:
    """Set ``stop``, as SIGTERM would, when this worker's supervisor dies without stopping it
    (SIGKILL, OOM killer): an orphaned worker would otherwise run forever, beyond any
    supervisor's reach, next to the workers of the supervisor started in its place."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:
        return
    sentinel = parent.sentinel

    def watch_parent() -> None:
        wait([sentinel])  # readable once the supervisor's end of the pipe is closed
        if not stop.is_set():
            logger.warning("CQRS worker %s: its supervisor is gone; stopping", os.getpid())
            stop.set()

    threading.Thread(target=watch_parent, name="dj_cqrs-supervisor-watch", daemon=True).start()
