"""pika's own log lines about connection attempts that dj_cqrs reports itself.

A failed connection makes pika log six or seven ERROR lines and a traceback from several of its
modules. When the publisher's connection fails, dj_cqrs already says what happened once per
outage (``django-cqrs.outbox``), so the lines pika logs while :func:`reported_by_us` is active in
the current thread are dropped. The same holds for a channel the broker closes on purpose (the
partitioned consumer's look for the unpartitioned queue, usually answered 404). pika's lines from
any other code (other threads, other connections) are left alone.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

#: The pika modules that log about a connection attempt.
LOGGERS = (
    "pika.adapters.utils.io_services_utils",
    "pika.adapters.utils.connection_workflow",
    "pika.adapters.blocking_connection",
    "pika.adapters.base_connection",
    "pika.connection",
    "pika.channel",
)

_state = threading.local()
_lock = threading.Lock()
_installed = False


class _DropWhileReported(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_state, "active", False)


def _install() -> None:
    global _installed
    with _lock:
        if _installed:
            return
        quiet = _DropWhileReported()
        for name in LOGGERS:
            logging.getLogger(name).addFilter(quiet)
        _installed = True


@contextlib.contextmanager
def reported_by_us() -> Iterator[None]:
    """pika's log lines emitted by this thread inside the block are dropped."""
    _install()
    outer = getattr(_state, "active", False)
    _state.active = True
    try:
        yield
    finally:
        _state.active = outer
