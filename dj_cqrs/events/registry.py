"""The domain event handlers of this service: ``@handler(pattern, ...)`` and what they match.

A handler is a function ``fn(event)`` registered for one or more AMQP topic patterns over event
names (``order.*``: one word after ``order``; ``order.#``: zero or more). Its ``name`` (default
``module.qualname``) identifies it in the inbox: an event is handled once per handler name.
Registration happens when the module defining the handler is imported; import handler modules
from your app config's ``ready()`` (or from ``models.py``) so that ``cqrs_consume`` workers know
them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

from django.db import DEFAULT_DB_ALIAS

from dj_cqrs.core.event import check_pattern, topic_matches
from dj_cqrs.core.names import event_binding_key, event_direct_binding_key
from dj_cqrs.exceptions import ConfigurationError

F = TypeVar("F", bound=Callable[..., Any])

#: The longest handler name the inbox stores.
NAME_MAX_LENGTH = 255


@dataclasses.dataclass(frozen=True)
class Handler:
    """A registered handler (see :func:`handler`)."""

    name: str
    patterns: tuple[str, ...]
    fn: Callable[[Any], Any]
    #: Its database work and its inbox row commit together (exactly once); False: at least once.
    atomic: bool = True
    #: Never an older event of a key after a newer one (older ones are skipped).
    ordered: bool = False
    #: The database of its transaction and inbox.
    using: str = DEFAULT_DB_ALIAS

    def matches(self, name: str) -> bool:
        return any(topic_matches(pattern, name) for pattern in self.patterns)


_handlers: dict[str, Handler] = {}


def handler(
    pattern: str,
    *patterns: str,
    name: str | None = None,
    atomic: bool = True,
    ordered: bool = False,
    using: str | None = None,
) -> Callable[[F], F]:
    """Register the decorated ``fn(event)`` for the events whose name matches a pattern.

    ``atomic=True`` (default): ``fn`` runs in a transaction on ``using`` with the inbox row that
    records it, so its database work happens exactly once per event. ``atomic=False``: ``fn`` runs
    outside a transaction (side effects elsewhere: mail, HTTP) and may run again after a crash
    (at least once). ``ordered=True`` (atomic handlers): ``fn`` never gets an older event of a key
    after a newer one: an event that arrives after a newer one of its key is skipped; while an
    event it failed on is retried, newer events of the key wait (are retried too).
    """
    checked = tuple(check_pattern(p) for p in (pattern, *patterns))
    if ordered and not atomic:
        raise ValueError("ordered=True needs atomic=True: the handler's position in a key commits with its work")

    def register(fn: F) -> F:
        label = name or f"{fn.__module__}.{fn.__qualname__}"
        if not isinstance(label, str) or not label or len(label) > NAME_MAX_LENGTH:
            raise ValueError(
                f"handler name must be 1 to {NAME_MAX_LENGTH} characters, got {label!r}"
            )
        existing = _handlers.get(label)
        if existing is not None and existing.fn is not fn and _code(existing.fn) != _code(fn):
            raise ConfigurationError(
                f"two event handlers are named {label!r}: give one of them name=... (the inbox keys"
                " events by handler name)"
            )
        _handlers[label] = Handler(
            label, checked, fn, bool(atomic), bool(ordered), using or DEFAULT_DB_ALIAS
        )
        return fn

    return register


def _code(fn: Callable[..., Any]) -> Any:
    """The function's code location: a module imported twice registers the same handler."""
    code = getattr(fn, "__code__", None)
    return (code.co_filename, code.co_firstlineno) if code is not None else id(fn)


def handlers() -> list[Handler]:
    """Every registered handler, in registration order."""
    return list(_handlers.values())


def matching(name: str) -> list[Handler]:
    """The handlers of an event name, in registration order."""
    return [h for h in _handlers.values() if h.matches(name)]


def unregister(name: str) -> None:
    """Remove a handler (tests)."""
    _handlers.pop(name, None)


def binding_keys(queue: str) -> list[str]:
    """What ``queue`` is bound with for the handlers: each pattern, and the direct key of events
    replayed to this queue alone. Empty without handlers."""
    patterns = dict.fromkeys(p for h in _handlers.values() for p in h.patterns)
    if not patterns:
        return []
    return [*(event_binding_key(p) for p in patterns), event_direct_binding_key(queue)]


__all__ = ["Handler", "binding_keys", "handler", "handlers", "matching", "unregister"]
