"""Transports: broker adapters (see :mod:`dj_cqrs.transport.base`). Nothing is imported or
connected until first use.

``get_transport()`` returns the configured transport instance (cached per settings value, see
:mod:`dj_cqrs.transport.resolution`).
``dj_cqrs.transport.current_transport``, ``RabbitMQTransport`` and ``KombuTransport`` keep
working for django-cqrs code; they are resolved on attribute access.
"""

from __future__ import annotations

from typing import Any

from dj_cqrs.transport.base import BaseTransport
from dj_cqrs.transport.resolution import (
    get_transport,
    reset_transport,
    resolve_transport_class,
    set_transport,
    settings_changed,
)


def __getattr__(name: str) -> Any:
    if name == "current_transport":
        return get_transport()
    if name == "RabbitMQTransport":
        from dj_cqrs.transport.rabbit_mq import RabbitMQTransport

        return RabbitMQTransport
    if name == "KombuTransport":
        from dj_cqrs.transport.kombu import KombuTransport

        return KombuTransport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BaseTransport",
    "get_transport",
    "reset_transport",
    "resolve_transport_class",
    "set_transport",
    "settings_changed",
]
