"""Which transport instance is in use.

``get_transport()`` returns the configured transport instance (created on first use, cached per
``CQRS['transport']`` value, dropped when ``settings.CQRS`` changes); ``set_transport()`` installs
one explicitly (tests). Methods marked :func:`through_instance` go through this process's
instance of their class when called on the class, as django-cqrs's classmethods were.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from dj_cqrs.conf import TRANSPORT_ALIASES, cqrs_settings, effective_transport, test_runner_active
from dj_cqrs.exceptions import ConfigurationError
from dj_cqrs.transport.base import BaseTransport, ClassCallable

_F = TypeVar("_F", bound=Callable[..., Any])

logger = logging.getLogger("django-cqrs.transport")

_lock = threading.Lock()
_state: dict[str, Any] = {}
#: Instances made for class-level calls of a class that is not the configured transport.
_class_defaults: dict[type, BaseTransport] = {}
#: Transports already reported as reaching a broker under the test runner (once per process).
_warned: set[str] = set()


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
    path = cqrs_settings.transport or effective_transport(cqrs_settings.raw)
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
    if getattr(instance, "supports_fail_fast", False) and test_runner_active():
        _warn_broker_under_tests(path)
    return instance


def _warn_broker_under_tests(path: Any) -> None:
    """The test settings name a transport that reaches a real broker: it is used (a suite that
    tests against its broker keeps working), and said once per process, since a test run that
    publishes to a development broker overwrites its replicas."""
    key = path if isinstance(path, str) else repr(path)
    if key in _warned:
        return
    _warned.add(key)
    url = cqrs_settings.url
    where = url.rsplit("@", 1)[-1] if isinstance(url, str) and url else "its default address"
    logger.warning(
        "Tests publish through CQRS['transport'] = %r, to the broker at %s: the test settings name"
        " it. Leave CQRS['transport'] out of the test settings (the memory transport is then used)"
        " or set it to 'memory', unless these tests mean to reach that broker.",
        path,
        where,
    )


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
        made_for_class_calls = list(_class_defaults.values())
        _class_defaults.clear()
    for closing in [transport, *made_for_class_calls]:
        if closing is None:
            continue
        try:
            closing.close()
        except Exception:  # noqa: BLE001 - closing a transport being replaced must not fail
            pass


def instance_for(cls: type[BaseTransport]) -> BaseTransport:
    """The instance a class-level call of ``cls`` goes through: the configured transport when it
    is one, else one made for such calls (kept until ``reset_transport()``)."""
    try:
        current = get_transport()
    except ConfigurationError:
        current = None
    if isinstance(current, cls):
        return current
    with _lock:
        kept = _class_defaults.get(cls)
    if kept is None:
        kept = cls()
        with _lock:
            kept = _class_defaults.setdefault(cls, kept)
    return kept


def through_instance(func: _F) -> _F:
    """Mark a method that, called on the transport class, runs on the process's instance of it."""
    return cast(_F, ClassCallable(func, lambda cls: [instance_for(cls)], each=False))


__all__ = [
    "get_transport",
    "instance_for",
    "reset_transport",
    "resolve_transport_class",
    "set_transport",
    "through_instance",
]
