"""Connecting to RabbitMQ (pika) and declaring a replica service's topology.

Shared by the publisher (:mod:`dj_cqrs.transport.rabbit_mq`), the consumer
(:mod:`dj_cqrs.transport.rabbit_consumer`) and the dead-letter store
(:mod:`dj_cqrs.transport.rabbit_dead_letters`).
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

import pika
import pika.exceptions

from dj_cqrs.conf import cqrs_settings
from dj_cqrs.core.broker_urls import broker_urls
from dj_cqrs.core.names import binding_keys, dead_letter_binding_key
from dj_cqrs.exceptions import BrokerRefused, ConnectionFailed, exception_chain
from dj_cqrs.transport.rabbit_nodes import BrokerNodes, node_parameters

if TYPE_CHECKING:
    from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

#: Errors after which the connection is dropped and re-opened.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    pika.exceptions.AMQPError,
    ConnectionError,
    socket.error,
    AssertionError,  # pika raises it for some broken-connection states
)


def connection_parameters(purpose: str = "producer") -> pika.ConnectionParameters:
    """pika parameters from ``CQRS['url']`` (amqp:// or amqps://, vhost and query honoured) or
    from the legacy ``host``/``port``/``user``/``password`` keys; for a list of node URLs, the
    first node's (:func:`~dj_cqrs.transport.rabbit_nodes.node_parameters` gives every node's)."""
    return node_parameters(purpose)[0]


#: AMQP reply codes of a refusal: 403 ACCESS_REFUSED (login, or no permission on a resource),
#: 530 NOT_ALLOWED (no access to the virtual host, or it does not exist).
_REFUSAL_CODES = {403: "ACCESS_REFUSED", 530: "NOT_ALLOWED"}


def refusal_reason(exc: BaseException) -> str | None:
    """What the broker refused and what to fix, when ``exc`` (or its cause) is an authentication
    or authorisation refusal; None for anything else (a transient failure)."""
    for error in exception_chain(exc):
        if isinstance(
            error,
            (pika.exceptions.ProbableAuthenticationError, pika.exceptions.AuthenticationError),
        ):
            return (
                "the broker refused the login (authentication): check the user name and password"
                f" of CQRS['url'] ({error})"
            )
        if isinstance(error, pika.exceptions.ProbableAccessDeniedError):
            return (
                "the broker refused access to the virtual host: check that the vhost of CQRS['url']"
                f" exists and that the user has permissions on it ({error})"
            )
        code = getattr(error, "reply_code", None)
        if isinstance(
            error, (pika.exceptions.ConnectionClosedByBroker, pika.exceptions.ChannelClosedByBroker)
        ) and (code in _REFUSAL_CODES):
            return (
                f"the broker refused an operation ({code} {_REFUSAL_CODES[code]}): check the user's"
                f" permissions (configure/write on the exchange {cqrs_settings.exchange!r}) and its"
                f" access to the vhost ({error.reply_text})"  # type: ignore[attr-defined]
            )
    return None


def display_url() -> str:
    """The broker address for messages: ``CQRS['url']`` without its password (each node's,
    comma-separated, for a cluster), or the legacy ``host``/``port``/``user`` keys."""
    url = cqrs_settings.url
    if isinstance(url, str) and url:
        return redact_password(url)
    if url:
        return ", ".join(redact_password(node) for node in broker_urls(url))
    user = f"{cqrs_settings.user}@" if cqrs_settings.user else ""
    return f"amqp://{user}{cqrs_settings.host or 'localhost'}:{cqrs_settings.port or 5672}/"


def redact_password(url: str) -> str:
    """``url`` with the password of its user info replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, path = rest.partition("/")
    userinfo, at, host = netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.partition(":")[0]
    return f"{scheme}://{user}:***@{host}{slash}{path}"


def refused(reason: str, url: str) -> BrokerRefused:
    """The :class:`~dj_cqrs.exceptions.BrokerRefused` to raise for a refusal."""
    return BrokerRefused(f"RabbitMQ at {url} refused dj_cqrs: {reason}", url=url, reason=reason)


def message_properties(
    headers: dict[str, Any] | None = None, expiration: str | None = None
) -> pika.BasicProperties:
    return pika.BasicProperties(
        content_type="text/plain", delivery_mode=2, headers=headers or None, expiration=expiration
    )


def open_blocking_connection(purpose: str, nodes: BrokerNodes | None = None) -> BlockingConnection:
    """A connection for ``purpose`` (named so in the broker's UI) to the first node of ``nodes``
    that answers (default: the nodes of ``CQRS['url']`` in order); ``ConnectionFailed`` if none."""
    try:
        return (nodes or BrokerNodes(purpose)).connect()
    except CONNECTION_ERRORS as exc:
        raise ConnectionFailed(f"cannot connect to RabbitMQ at {display_url()}: {exc!r}") from exc


def declare_topology(
    channel: BlockingChannel,
    exchange: str,
    queue: str,
    dead_letter_queue: str,
    cqrs_ids: list[str],
    extra_keys: list[str] | None = None,
) -> None:
    """The exchange, the replica queue and the dead-letter queue with django-cqrs's bindings, and
    ``extra_keys`` (domain event patterns) on the replica queue."""
    channel.exchange_declare(exchange=exchange, exchange_type="topic", durable=True)
    channel.queue_declare(queue, durable=True)
    channel.queue_declare(dead_letter_queue, durable=True)
    for cqrs_id in cqrs_ids:
        for key in binding_keys(queue, cqrs_id):
            channel.queue_bind(queue, exchange, routing_key=key)
        dead_letter_key = dead_letter_binding_key(dead_letter_queue, cqrs_id)
        channel.queue_bind(dead_letter_queue, exchange, routing_key=dead_letter_key)
    for key in extra_keys or ():
        channel.queue_bind(queue, exchange, routing_key=key)


__all__ = [
    "CONNECTION_ERRORS",
    "connection_parameters",
    "declare_topology",
    "display_url",
    "message_properties",
    "open_blocking_connection",
    "redact_password",
    "refusal_reason",
    "refused",
]
