"""Callbacks run after a transaction that wrote outbox rows commits.

Upper layers (the webhook deliverer) register a cheap, non-blocking callable here to be woken
early instead of waiting for their polling interval; the master never imports them. Without a
listener the commit path pays one truthiness test.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

logger = logging.getLogger("django-cqrs.outbox")

#: The registered callables, each called with the database alias of the commit. Read without a
#: lock on the commit path; changed by copy-and-replace.
listeners: tuple[Callable[[str], None], ...] = ()


def add(listener: Callable[[str], None]) -> None:
    global listeners
    if listener not in listeners:
        listeners = (*listeners, listener)


def remove(listener: Callable[[str], None]) -> None:
    global listeners
    listeners = tuple(fn for fn in listeners if fn != listener)


def notify(using: str) -> None:
    """Call every listener; one that raises is logged, never the committing code's problem."""
    for listener in listeners:
        try:
            listener(using)
        except Exception:  # noqa: BLE001 - a listener must not break the commit hook
            logger.warning("CQRS commit listener %r failed", listener, exc_info=True)
