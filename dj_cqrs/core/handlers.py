"""The consume handler a transport uses when its caller passes none, and the routes beside it.

``cqrs_consume`` workers and code written for django-cqrs (``transport.consume()``, tests calling
``MemoryTransport.join()``) take :func:`default_handler`, which the ``dj_cqrs`` app config fills
in from the replica layer when Django starts. Other kinds of messages (domain events) plug in as
a :class:`Route`: the default handler then sends each run of consecutive messages a route accepts
to that route's handler and the rest to the replica's, and returns the outcomes in delivery
order; :func:`binding_keys` tells the consume loops what to bind the queue with for the routes.
A transport never imports the replica or the events layer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from dj_cqrs.core.messages import ConsumeHandler, InboundMessage, Outcome
from dj_cqrs.exceptions import ConfigurationError

_default: list[ConsumeHandler] = []
_routes: dict[str, Route] = {}


@dataclasses.dataclass(frozen=True)
class Route:
    """Messages ``accepts`` selects go to ``handler``; ``binding_keys(queue)`` are the routing keys
    the queue is bound with for them (read when a consume loop starts)."""

    name: str
    accepts: Callable[[InboundMessage], bool]
    handler: ConsumeHandler
    binding_keys: Callable[[str], list[str]]


def set_default_handler(handler: ConsumeHandler | None) -> None:
    """Install the handler used when ``consume()`` is called without one (``None`` removes it)."""
    _default[:] = [] if handler is None else [handler]


def add_route(route: Route) -> None:
    """Add (or replace, by name) a route."""
    _routes[route.name] = route


def remove_route(name: str) -> None:
    _routes.pop(name, None)


def binding_keys(queue: str) -> list[str]:
    """The routing keys the routes want ``queue`` bound with, without repeats."""
    keys: dict[str, None] = {}
    for route in _routes.values():
        keys.update(dict.fromkeys(route.binding_keys(queue)))
    return list(keys)


def _base() -> ConsumeHandler:
    if not _default:
        raise ConfigurationError(
            "no CQRS consume handler: add 'dj_cqrs' to INSTALLED_APPS and call django.setup() (its"
            " AppConfig installs the replica's handler), or pass handler= to consume()"
        )
    return _default[0]


def _routed(
    messages: Sequence[InboundMessage],
    wait: Callable[[float], bool] | None,
    tick: Callable[[], None] | None = None,
) -> list[Outcome]:
    """Each run of consecutive messages of one route goes to its handler, in delivery order."""
    base = _base()
    routes = list(_routes.values())
    owners: list[ConsumeHandler] = []
    for message in messages:
        owner = base
        for route in routes:
            if route.accepts(message):
                owner = route.handler
                break
        owners.append(owner)
    outcomes: list[Outcome] = []
    start = 0
    while start < len(messages):
        end = start + 1
        while end < len(messages) and owners[end] is owners[start]:
            end += 1
        outcomes.extend(owners[start](messages[start:end], wait, tick))
        start = end
    return outcomes


def default_handler() -> ConsumeHandler:
    """The installed default handler (with the routes, if any); :class:`ConfigurationError` if
    none is installed."""
    base = _base()
    return _routed if _routes else base


__all__ = [
    "Route",
    "add_route",
    "binding_keys",
    "default_handler",
    "remove_route",
    "set_default_handler",
]
