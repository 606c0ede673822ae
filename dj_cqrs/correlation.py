"""Correlation ids.

``master.correlation_function(signal_type, cqrs_id, instance_pk, queue)`` decides the id sent with
each event. Without it, the id set with :func:`correlation_scope` (a context variable) is used.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

from dj_cqrs.conf import cqrs_settings, resolve_callable

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
    """The correlation id of one event (django-cqrs's helper): what ``master.correlation_function``
    returns (as a string), or else the id of the current :func:`correlation_scope`."""
    func = resolve_callable(cqrs_settings.master.correlation_function)
    if func is None:
        return _correlation_id.get()
    value = func(signal_type, cqrs_id, instance_pk, queue)
    return None if value is None else str(value)
