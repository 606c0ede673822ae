"""Kombu transport: any kombu URL (``redis://``, ``amqp://``, ``filesystem://`` ...).

``CQRS['transport_options']`` is passed to kombu's ``Connection(transport_options=...)``, e.g.
``{"data_folder_in": d, "data_folder_out": d, "control_folder": c}`` for ``filesystem://``.

The body is the same JSON as on RabbitMQ, ``meta``, ``expires`` and ``retries`` included. Queue
and routing-key names follow the RabbitMQ transport: the replica queue ``CQRS['queue']`` is bound
with ``<cqrs_id>`` and ``cqrs.<queue>.<cqrs_id>``; dead letters go to ``dead_letter_<queue>``.

Retries and dead letters (see :mod:`dj_cqrs.transport.kombu_consumer`): brokers reached through
kombu have no per-message delay, so a retry is published at once to ``<queue>.retry`` with an
``x-cqrs-not-before`` header, and a worker holds it (unacknowledged, at most
``replica.delay_queue_max_size`` per worker) until it is due. Dead letters go to
``dead_letter_<queue>`` with the same ``x-cqrs-*`` headers as on RabbitMQ.
``CQRS['transport_options']`` is passed to ``kombu.Connection`` (e.g. Redis ``visibility_timeout``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterable
from typing import Any

import kombu.exceptions
from kombu.connection import Connection
from kombu.entity import Exchange, Queue, binding

from dj_cqrs import encoding
from dj_cqrs.conf import cqrs_settings
from dj_cqrs.core.names import (
    binding_keys,
    dead_letter_binding_key,
    retry_queue_name,
    routing_key_for,
)
from dj_cqrs.core.payload import TransportPayload
from dj_cqrs.exceptions import PublishFailed
from dj_cqrs.log import payload_context
from dj_cqrs.transport.base import BaseTransport, every_instance, through_instance

logger = logging.getLogger("django-cqrs.transport.kombu")


def _url() -> str:
    return cqrs_settings.url or "amqp://localhost"


def new_connection() -> Connection:
    """A kombu connection for ``CQRS['url']`` with ``CQRS['transport_options']`` (a copy)."""
    url = _url()
    kwargs: dict[str, Any] = {}
    if url.partition("://")[0] == "filesystem":
        # kombu's own filesystem channel can hand a consumer a message file before its body is
        # written (the message is then lost); ours writes each file atomically.
        from dj_cqrs.transport.kombu_filesystem import Transport as FilesystemTransport

        kwargs["transport"] = FilesystemTransport
    return Connection(url, transport_options=dict(cqrs_settings.transport_options or {}), **kwargs)


def connection_errors(conn: Connection) -> tuple[type[BaseException], ...]:
    return tuple(conn.connection_errors) + tuple(conn.channel_errors) + (
        kombu.exceptions.KombuError,
        ConnectionError,
        socket.error,
    )


class KombuTransport(BaseTransport):
    supports_dead_letters = True
    background_publish = True

    def __init__(self) -> None:
        self._local = threading.local()

    # -- producing -------------------------------------------------------------------------------

    def _connection(self) -> Connection:
        conn: Connection | None = getattr(self._local, "connection", None)
        pid = getattr(self._local, "pid", None)
        if conn is None or pid != os.getpid():
            conn = new_connection()
            self._local.connection = conn
            self._local.pid = os.getpid()
        return conn

    def exchange(self) -> Exchange:
        return Exchange(cqrs_settings.exchange, type="topic", durable=True)

    @through_instance
    def produce(self, payload: TransportPayload) -> None:
        """Publish one payload (also callable on the class, as in django-cqrs: it then publishes
        through this process's ``KombuTransport``)."""
        self.produce_many([payload])

    def produce_many(self, payloads: Iterable[TransportPayload]) -> None:
        for payload in payloads:
            self.publish_raw(
                self.exchange(), routing_key_for(payload), encoding.dumps_bytes(payload.to_dict(), allow_nan=True), None, payload
            )

    def publish_raw(
        self,
        exchange: Exchange | str,
        routing_key: str,
        body: bytes,
        headers: dict[str, Any] | None,
        payload: TransportPayload | None = None,
        declare: list[Any] | None = None,
        expiration: float | None = None,
    ) -> None:
        conn = self._connection()
        retries = cqrs_settings.master.publish_retries
        try:
            producer = conn.Producer()
            producer.publish(
                body,
                exchange=exchange,
                routing_key=routing_key,
                headers=headers or {},
                content_type="text/plain",
                content_encoding="utf-8",
                delivery_mode=2,
                declare=declare or ([exchange] if isinstance(exchange, Exchange) else []),
                retry=True,
                retry_policy={"max_retries": retries, "interval_start": 0.2, "interval_step": 0.5},
                expiration=expiration,
            )
        except connection_errors(conn) as exc:
            self.clean_connection()
            extra = payload_context(payload) if payload is not None else None
            logger.error("CQRS publish failed: %r", exc, extra=extra)
            raise PublishFailed(f"publish with routing key {routing_key!r} failed: {exc!r}") from exc
        if payload is not None:
            logger.info(
                "CQRS is published: pk = %s (%s), correlation_id = %s.",
                payload.pk,
                payload.cqrs_id,
                payload.correlation_id,
                extra=payload_context(payload),
            )

    @every_instance
    def clean_connection(self, *args: Any, **kwargs: Any) -> None:
        """Release the publishing connection of the calling thread.

        Also callable on the class, as in django-cqrs (``KombuTransport.clean_connection()`` in
        a post-fork hook): it then does so for every ``KombuTransport`` of this process. A
        connection inherited from the parent process is only dropped: releasing it would close
        the parent's connection (AMQP ``Connection.Close`` and a socket shutdown).
        """
        conn: Connection | None = getattr(self._local, "connection", None)
        inherited = getattr(self._local, "pid", None) != os.getpid()
        self._local.connection = None
        if conn is not None and not inherited:
            try:
                conn.release()
            except Exception:  # noqa: BLE001 - discarding a broken connection
                pass

    # -- consuming -------------------------------------------------------------------------------

    def queues(self, cqrs_ids: list[str]) -> tuple[Queue, Queue, Queue]:
        """The replica queue, its retry queue and its dead-letter queue."""
        exchange = self.exchange()
        queue_name = cqrs_settings.queue
        dlq_name = cqrs_settings.dead_letter_queue
        bindings = [
            binding(exchange, routing_key=key) for cqrs_id in cqrs_ids for key in binding_keys(queue_name, cqrs_id)
        ]
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

    def dead_letter_store(self) -> Any:
        from dj_cqrs.transport.kombu_dead_letters import KombuDeadLetterStore

        return KombuDeadLetterStore(self)

    @through_instance
    def consume(self, cqrs_ids: list[str] | None = None, **kwargs: Any) -> None:
        from dj_cqrs.transport.kombu_consumer import KombuConsumer

        KombuConsumer(self, cqrs_ids=cqrs_ids, **kwargs).run()


__all__ = ["KombuTransport"]
