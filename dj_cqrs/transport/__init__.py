"""Transport resolution. Nothing is imported or connected until first use.

``get_transport()`` returns the configured transport instance (cached per settings value).
``dj_cqrs.transport.current_transport``, ``RabbitMQTransport`` and ``KombuTransport`` keep
working for django-cqrs code; they are resolved on attribute access.
"""

from __future__ import annotations

import threading
from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from dj_cqrs.conf import TRANSPORT_ALIASES, cqrs_settings
from dj_cqrs.exceptions import ConfigurationError
from dj_cqrs.transport.base import BaseTransport, forget_class_defaults

_lock = threading.Lock()
_state: dict[str, Any] = {}


def resolve_transport_class(path: Any) -> type[BaseTransport]:
    """Import the class named by ``CQRS['transport']`` (a dotted path, an alias or a class)."""
    if isinstance(path, type):
        cls = path
    elif isinstance(path, str) and path:
        dotted = TRANSPORT_ALIASES.get(path, path)
        try:
            cls = import_string(dotted)
        except ImportError as exc:
            raise ConfigurationError(
                f"dj_cqrs.E003: CQRS['transport'] {path!r} cannot be imported: {exc}"
            ) from exc
    else:
        raise ConfigurationError("dj_cqrs.E002: CQRS['transport'] is not set")
    if not (isinstance(cls, type) and issubclass(cls, BaseTransport)):
        raise ConfigurationError(
            f"dj_cqrs.E004: CQRS['transport'] {path!r} is not a dj_cqrs.transport.BaseTransport subclass"
        )
    return cls


def get_transport() -> BaseTransport:
    """The transport instance for the current settings (created on first use)."""
    explicit = _state.get("explicit")
    if explicit is not None:
        return explicit  # type: ignore[no-any-return]
    path = cqrs_settings.transport
    key = path if isinstance(path, str) else repr(path)
    current = _state.get("transport")
    if current is not None and _state.get("key") == key:
        return current  # type: ignore[no-any-return]
    with _lock:
        current = _state.get("transport")
        if current is not None and _state.get("key") == key:
            return current  # type: ignore[no-any-return]
        cls = resolve_transport_class(path)
        instance = cls()
        _state["transport"] = instance
        _state["key"] = key
        return instance


def set_transport(transport: BaseTransport | None) -> None:
    """Install a transport instance explicitly (tests); ``None`` goes back to the settings.

    An explicit transport stays in use when ``settings.CQRS`` changes (e.g. ``override_settings``
    inside ``use_memory_transport()``), until ``set_transport(None)`` or ``reset_transport()``.
    """
    with _lock:
        _state.clear()
        if transport is not None:
            _state["explicit"] = transport


def settings_changed() -> None:
    """``settings.CQRS`` changed: drop the transport built from the old settings (not an explicit one)."""
    if _state.get("explicit") is None:
        reset_transport()


@receiver(setting_changed)
def _drop_on_change(*, setting: str, **kwargs: Any) -> None:
    if setting == "CQRS":
        settings_changed()


def reset_transport() -> None:
    """Forget the cached transport (and those made for class-level calls such as
    ``RabbitMQTransport.produce(payload)``), closing their connections."""
    with _lock:
        transport = _state.pop("transport", None) or _state.get("explicit")
        _state.clear()
    for closing in [transport, *forget_class_defaults()]:
        if closing is None:
            continue
        try:
            closing.close()
        except Exception:  # noqa: BLE001 - closing a transport being replaced must not fail
            pass


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


__all__ = ["BaseTransport", "get_transport", "reset_transport", "set_transport"]
