"""The RabbitMQ node(s) a connection goes to: pika parameters for ``CQRS['url']`` and fail-over.

``CQRS['url']`` names one broker or the nodes of a cluster (see
:mod:`dj_cqrs.core.broker_urls`). With several nodes, a connection is opened with pika's
multi-host form (a sequence of parameters, tried in order: the first node that answers wins, each
cycle over the nodes repeated ``connection_attempts`` times with ``retry_delay`` between cycles).
Each connection owner (a publishing thread, a consumer, ...) has its own :class:`BrokerNodes`:
after its connection to a node was lost, its next connection starts with the node after that one,
so a dead or hanging node is tried last. One URL behaves exactly as before: one parameters object.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import TYPE_CHECKING, Any

import pika

from dj_cqrs.conf import cqrs_settings
from dj_cqrs.core.broker_urls import broker_urls
from dj_cqrs.exceptions import ConfigurationError

if TYPE_CHECKING:
    from pika.adapters.blocking_connection import BlockingConnection

logger = logging.getLogger("django-cqrs.transport.rabbitmq")


def url_parameters(url: str) -> pika.URLParameters:
    """pika parameters of one ``amqp://`` or ``amqps://`` URL (vhost and query honoured; TLS
    verifies the certificate against the URL's host name unless the URL says otherwise)."""
    try:
        params = pika.URLParameters(url)
    except (ValueError, TypeError, SyntaxError) as exc:  # what pika raises for bad URLs
        raise ConfigurationError(
            f"dj_cqrs.E011: CQRS['url'] is not a valid RabbitMQ URL: {exc}"
        ) from exc
    if params.ssl_options is not None and not params.ssl_options.server_hostname:
        # Verify the certificate against the host name we connect to.
        params.ssl_options = pika.SSLOptions(
            params.ssl_options.context, server_hostname=params.host
        )
    return params


def _legacy_parameters() -> pika.ConnectionParameters:
    kwargs: dict[str, Any] = {}
    if cqrs_settings.host:
        kwargs["host"] = cqrs_settings.host
    if cqrs_settings.port:
        kwargs["port"] = cqrs_settings.port
    if cqrs_settings.user:
        kwargs["credentials"] = pika.PlainCredentials(
            cqrs_settings.user, cqrs_settings.password or ""
        )
    return pika.ConnectionParameters(**kwargs)


def node_parameters(purpose: str = "producer") -> list[pika.ConnectionParameters]:
    """pika parameters for each node of ``CQRS['url']``, in the configured order (one item for
    one URL, or for the legacy ``host``/``port``/``user``/``password`` keys)."""
    urls = broker_urls(cqrs_settings.url)
    nodes = [url_parameters(url) for url in urls] if urls else [_legacy_parameters()]
    name = f"dj_cqrs {purpose} {socket.gethostname()}:{os.getpid()}"
    for params in nodes:
        if params.blocked_connection_timeout is None:
            params.blocked_connection_timeout = 60
        # A ``client_properties`` query option of the URL (e.g. its own connection_name) wins.
        params.client_properties = {
            "connection_name": name,
            "product": "dj_cqrs",
            **(params.client_properties or {}),
        }
    return nodes


def node_label(params: pika.ConnectionParameters) -> str:
    """``host:port`` of a node, for log lines."""
    return f"{params.host}:{params.port}"


def _position_of(used: object, candidates: list[pika.ConnectionParameters]) -> int:
    """Which of ``candidates`` the connection went to, given the parameters it holds (``used``).

    pika's connection keeps a deep copy of the parameters it connected with (``Connection.__init__``),
    never the object it was given, so the node is found by host, port and virtual host; the first
    candidate when nothing matches."""
    if used is None:
        return 0
    key = (
        getattr(used, "host", None),
        getattr(used, "port", None),
        getattr(used, "virtual_host", None),
    )
    for position, params in enumerate(candidates):
        if params is used or (params.host, params.port, params.virtual_host) == key:
            return position
    return 0


class BrokerNodes:
    """The nodes one connection owner connects to, and which of them it tries first.

    :meth:`connect` opens a connection to the first node that answers, starting with
    :attr:`start`; :meth:`lost` (after the connection failed) moves the start past the node it
    was connected to. Not shared between threads or processes: each owner has its own.
    """

    def __init__(self, purpose: str) -> None:
        self.purpose = purpose
        #: Index (in the configured order) of the node tried first by the next :meth:`connect`.
        self.start = 0
        #: Index of the node the last connection went to (None: not connected, or lost).
        self.current: int | None = None
        #: ``host:port`` of that node.
        self.current_label: str | None = None

    def ordered(self, nodes: list[pika.ConnectionParameters]) -> list[int]:
        """Indexes of ``nodes`` in the order they are tried: from :attr:`start`, wrapping round."""
        count = len(nodes)
        start = self.start % count if count else 0
        return [(start + i) % count for i in range(count)]

    def connect(self, *, attempts: int | None = None) -> BlockingConnection:
        """A connection to the first node that answers (pika's errors propagate). ``attempts``
        overrides ``connection_attempts`` (1: each node once, no pause)."""
        nodes = node_parameters(self.purpose)
        if attempts is not None:
            for params in nodes:
                params.connection_attempts = attempts
        if len(nodes) == 1:
            connection = pika.BlockingConnection(nodes[0])
            self.current, self.current_label = 0, node_label(nodes[0])
            return connection
        order = self.ordered(nodes)
        candidates = [nodes[i] for i in order]
        connection = pika.BlockingConnection(candidates)
        used = getattr(getattr(connection, "_impl", None), "params", None)
        position = _position_of(used, candidates)
        self.current = order[position]
        self.current_label = node_label(nodes[self.current])
        if position:
            logger.warning(
                "CQRS %s connected to RabbitMQ node %s (node %s of %s): the node(s) tried before it"
                " did not answer",
                self.purpose,
                self.current_label,
                self.current + 1,
                len(nodes),
            )
        else:
            logger.info("CQRS %s connected to RabbitMQ node %s", self.purpose, self.current_label)
        return connection

    def lost(self) -> None:
        """The connection to the current node failed: the next :meth:`connect` starts with the
        node after it (the failed one is tried last)."""
        if self.current is None:
            return
        count = len(broker_urls(cqrs_settings.url)) or 1
        if count > 1:
            logger.warning(
                "CQRS %s lost RabbitMQ node %s: the next connection tries the other nodes first",
                self.purpose,
                self.current_label,
            )
        self.start = (self.current + 1) % count
        self.current = self.current_label = None


__all__ = ["BrokerNodes", "node_label", "node_parameters", "url_parameters"]
