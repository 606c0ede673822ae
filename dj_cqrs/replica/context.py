"""Per-message scratch space: what went wrong while applying the current message.

The managers record a reason (e.g. ``missing_required_fields``) or the exception they caught, so
that a failure can be retried or dead-lettered with a precise reason.
"""

from __future__ import annotations

import contextvars
from typing import Any

_current: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "dj_cqrs_apply_context", default=None
)


def current() -> dict[str, Any]:
    value = _current.get()
    if value is None:
        value = {}
        _current.set(value)
    return value


def reset() -> dict[str, Any]:
    value: dict[str, Any] = {}
    _current.set(value)
    return value
