"""The consume handler a transport uses when its caller passes none.

``cqrs_consume`` workers pass the replica's handler to ``transport.consume(handler=...)``. Code
written for django-cqrs calls ``transport.consume()`` (and tests call ``MemoryTransport.join()``)
without one: the transport then asks :func:`default_handler`, which the ``dj_cqrs`` app config
fills in from the replica layer when Django starts. A transport never imports the replica.
"""

from __future__ import annotations

from dj_cqrs.core.messages import ConsumeHandler
from dj_cqrs.exceptions import ConfigurationError

_default: list[ConsumeHandler] = []


def set_default_handler(handler: ConsumeHandler | None) -> None:
    """Install the handler used when ``consume()`` is called without one (``None`` removes it)."""
    _default[:] = [] if handler is None else [handler]


def default_handler() -> ConsumeHandler:
    """The installed default handler; :class:`~dj_cqrs.exceptions.ConfigurationError` if none."""
    if not _default:
        raise ConfigurationError(
            "no CQRS consume handler: add 'dj_cqrs' to INSTALLED_APPS and call django.setup() (its"
            " AppConfig installs the replica's handler), or pass handler= to consume()"
        )
    return _default[0]


__all__ = ["default_handler", "set_default_handler"]
