"""Correlation ids.

``master.correlation_function(signal_type, cqrs_id, instance_pk, queue)`` decides the id sent with
each event. Without it, the id set with :func:`correlation_scope` (a context variable) is used.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

_correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "dj_cqrs_correlation_id", default=None
)


def current_correlation_id() -> str | None:
    return _correlation_id.get()


@contextlib.contextmanager
def correlation_scope(value: str | None) -> Iterator[None]:
    """Events produced inside this block carry ``value`` as correlation id."""
    token = _correlation_id.set(value)
    try:
        yield
    finally:
        _correlation_id.reset(token)


def get_correlation_id(signal_type: Any, cqrs_id: str, instance_pk: Any, queue: str | None) -> str | None:
    """django-cqrs's helper: the correlation id for one event."""
    from dj_cqrs.master.publisher import correlation_id

    return correlation_id(signal_type, cqrs_id, instance_pk, queue)
