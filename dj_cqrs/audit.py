"""Audit context: who and what caused the events emitted now.

A context variable holds the values of the current audit context (set by
:class:`dj_cqrs.middleware.AuditMiddleware` for a request, or by :func:`context` in management
commands and task workers). Every event recorded while it is set carries them in
``meta["audit"]``; without one, nothing about events changes (one ``ContextVar.get``).

Values may be computed lazily: a frame may hold a callable returning more values, resolved the
first time an event needs them (the middleware reads ``request.user`` this way, so that a request
that changes nothing never loads its session or user).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

Values = dict[str, Any]

#: The key of ``meta`` that carries the audit values.
META_KEY = "audit"


class _Frame:
    """One level of nested audit contexts: its own values over those of the enclosing frame."""

    __slots__ = ("_lazy", "_parent", "_resolved", "_values")

    def __init__(
        self, values: Values, parent: _Frame | None, lazy: Callable[[], Mapping[str, Any]] | None
    ) -> None:
        self._values = values
        self._parent = parent
        self._lazy = lazy
        self._resolved: Values | None = None

    def resolve(self) -> Values:
        resolved = self._resolved
        if resolved is None:
            resolved = dict(self._parent.resolve()) if self._parent is not None else {}
            if self._lazy is not None:
                resolved.update(_checked(dict(self._lazy())))
            resolved.update(self._values)
            self._resolved = resolved
        return resolved


_current: contextvars.ContextVar[_Frame | None] = contextvars.ContextVar(
    "dj_cqrs_audit", default=None
)


def _checked(values: Values) -> Values:
    for key, value in values.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"audit value {key!r} must be JSON-serializable (str, int, float, bool, None, "
                f"lists and dicts of them), got {type(value).__name__}: {exc}"
            ) from None
    return values


@contextlib.contextmanager
def context(**values: Any) -> Iterator[None]:
    """Events emitted inside this block carry ``values`` in ``meta["audit"]``.

    Nestable: the values of an inner block are merged over those of the outer one, which come
    back on exit. Follows :mod:`contextvars` (threads start without a context; asyncio tasks copy
    the one they were created in). Values must be JSON-serializable (``TypeError`` otherwise)."""
    with _scope(_checked(values)):
        yield


@contextlib.contextmanager
def _scope(values: Values, lazy: Callable[[], Mapping[str, Any]] | None = None) -> Iterator[None]:
    token = _current.set(_Frame(values, _current.get(), lazy))
    try:
        yield
    finally:
        _current.reset(token)


def lazy_context(
    values: Mapping[str, Any], lazy: Callable[[], Mapping[str, Any]]
) -> contextlib.AbstractContextManager[None]:
    """Like :func:`context`, plus the values ``lazy()`` returns, called at most once, the first
    time an event needs them (they must be JSON-serializable too)."""
    return _scope(_checked(dict(values)), lazy)


def current() -> Values | None:
    """The values of the current audit context (a copy), or None outside any."""
    frame = _current.get()
    if frame is None:
        return None
    return dict(frame.resolve())


def merged(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with ``meta["audit"]`` set to the current audit values; ``meta`` itself (the same
    object) outside any audit context, or when it already has an ``"audit"`` key (the caller's
    own wins)."""
    frame = _current.get()
    if frame is None or META_KEY in meta:
        return meta
    return {**meta, META_KEY: dict(frame.resolve())}


def merged_or_none(meta: dict[str, Any] | None) -> dict[str, Any] | None:
    """:func:`merged` for an optional meta (None stays None outside any audit context)."""
    frame = _current.get()
    if frame is None:
        return meta
    return merged(meta if meta is not None else {})


def active() -> bool:
    """Whether an audit context is set (fast paths that write ``meta`` as ``{}`` step aside)."""
    return _current.get() is not None
