"""Connecting through kombu, the replica service's queues, and received kombu messages.

Shared by the publisher (:mod:`dj_cqrs.transport.kombu`), the consumer
(:mod:`dj_cqrs.transport.kombu_consumer`) and the dead-letter store
(:mod:`dj_cqrs.transport.kombu_dead_letters`). Queue and routing-key names follow the RabbitMQ
transport: the replica queue ``CQRS['queue']`` is bound with ``<cqrs_id>`` and
``cqrs.<queue>.<cqrs_id>``; retries wait in ``<queue>.retry``; dead letters go to
``dead_letter_<queue>``.
"""

from __future__ import annotations

import socket
from typing import Any, Protocol

import kombu.exceptions
from kombu.connection import Connection
from kombu.entity import Exchange, Queue, binding

from dj_cqrs.conf import cqrs_settings
from dj_cqrs.core.messages import InboundMessage
from dj_cqrs.core.names import binding_keys, dead_letter_binding_key, retry_queue_name
from dj_cqrs.exceptions import BrokerRefused
from dj_cqrs.transport.kombu_filesystem import Transport as FilesystemTransport


def new_connection() -> Connection:
    """A kombu connection for ``CQRS['url']`` with ``CQRS['transport_options']`` (a copy). A list
    of URLs is handed to kombu as its failover list (kombu connects to the first that answers
    and fails over to the next; a ``;``-separated string kombu splits itself)."""
    setting = cqrs_settings.url
    url: str | list[str] = list(setting) if isinstance(setting, (list, tuple)) else (setting or "amqp://localhost")
    first = url[0] if isinstance(url, list) else url
    kwargs: dict[str, Any] = {}
    if first.partition("://")[0] == "filesystem":
        # kombu's own filesystem channel can hand a consumer a message file before its body is
        # written (the message is then lost); ours writes each file atomically.
        kwargs["transport"] = FilesystemTransport
    return Connection(url, transport_options=dict(cqrs_settings.transport_options or {}), **kwargs)


def connection_errors(conn: Connection) -> tuple[type[BaseException], ...]:
    """The errors after which ``conn`` is dropped and re-opened."""
    return tuple(conn.connection_errors) + tuple(conn.channel_errors) + (
        kombu.exceptions.KombuError,
        ConnectionError,
        socket.error,
    )


#: AMQP reply codes of a refusal (py-amqp ``AccessRefused`` 403, ``NotAllowed`` 530).
_REFUSAL_CODES = (403, 530)
#: What Redis answers to a wrong password or user (redis-py raises ``AuthenticationError`` for
#: some, a plain ``ResponseError`` for others), and to a missing permission (``NOPERM``).
_REDIS_REFUSALS = ("WRONGPASS", "NOAUTH", "NOPERM", "invalid username-password", "AUTH <password> called without")


def _refusal_reason(exc: BaseException) -> str | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        code = getattr(current, "reply_code", None) or getattr(current, "code", None)
        module = type(current).__module__
        if module.startswith("amqp") and code in _REFUSAL_CODES:
            what = "the login or an operation" if code == 403 else "access to the virtual host"
            return (
                f"the broker refused {what} ({code}): check the user name, password and vhost of"
                f" CQRS['url'] and the user's permissions ({getattr(current, 'reply_text', current)})"
            )
        if module.startswith("redis") and (
            type(current).__name__ in ("AuthenticationError", "AuthorizationError")
            or any(text in str(current) for text in _REDIS_REFUSALS)
        ):
            return f"Redis refused the credentials or permissions: check the user and password of CQRS['url'] ({current})"
        current = current.__cause__ or current.__context__
    return None


def refused(exc: BaseException, conn: Connection) -> BrokerRefused | None:
    """A :class:`~dj_cqrs.exceptions.BrokerRefused` when ``exc`` is an authentication or
    authorisation refusal (not transient: it is not retried); None otherwise."""
    reason = _refusal_reason(exc)
    if reason is None:
        return None
    url = conn.as_uri()  # kombu masks the password
    return BrokerRefused(f"the broker at {url} refused dj_cqrs: {reason}", url=url, reason=reason)


def cqrs_exchange() -> Exchange:
    """``CQRS['exchange']``: a durable topic exchange."""
    return Exchange(cqrs_settings.exchange, type="topic", durable=True)


def replica_queues(cqrs_ids: list[str], extra_keys: list[str] | None = None) -> tuple[Queue, Queue, Queue]:
    """The replica queue, its retry queue and its dead-letter queue, bound for ``cqrs_ids`` (and
    the replica queue for ``extra_keys``: domain event patterns)."""
    exchange = cqrs_exchange()
    queue_name = cqrs_settings.queue
    dlq_name = cqrs_settings.dead_letter_queue
    bindings = [
        binding(exchange, routing_key=key) for cqrs_id in cqrs_ids for key in binding_keys(queue_name, cqrs_id)
    ]
    bindings += [binding(exchange, routing_key=key) for key in extra_keys or ()]
    queue = Queue(queue_name, exchange=exchange, bindings=bindings, durable=True)
    retry = Queue(retry_queue_name(queue_name), routing_key=retry_queue_name(queue_name), durable=True)
    dlq_bindings = [
        binding(exchange, routing_key=dead_letter_binding_key(dlq_name, cqrs_id)) for cqrs_id in cqrs_ids
    ]
    if dlq_bindings:
        dlq = Queue(dlq_name, exchange=exchange, bindings=dlq_bindings, durable=True)
    else:
        dlq = Queue(dlq_name, routing_key=dlq_name, durable=True)
    return queue, retry, dlq


def inbound(message: Any) -> InboundMessage:
    """A received kombu message as an :class:`~dj_cqrs.core.messages.InboundMessage` (the kombu
    message is its handle)."""
    raw = message.body
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    elif raw is None:
        raw = b""
    return InboundMessage(
        body=raw,
        routing_key=(message.delivery_info or {}).get("routing_key", "") or "",
        headers=dict(message.headers or {}),
        handle=message,
    )


class MessagePublisher(Protocol):
    """What the consumer and the dead-letter store publish through (``KombuTransport``): one
    message to ``routing_key`` on ``exchange`` (``""``: straight into that queue), ``declare``
    declared first, expiring after ``expiration`` seconds; ``PublishFailed`` if it cannot."""

    def publish_message(
        self, exchange: Exchange | str, routing_key: str, body: bytes, headers: dict[str, Any] | None, *,
        declare: list[Any] | None = None, expiration: float | None = None,
    ) -> None: ...


__all__ = [
    "MessagePublisher",
    "connection_errors",
    "cqrs_exchange",
    "inbound",
    "new_connection",
    "refused",
    "replica_queues",
]
