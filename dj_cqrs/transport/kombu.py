"""Kombu transport: any kombu URL (``redis://``, ``amqp://``, ``filesystem://`` ...).

``CQRS['transport_options']`` is passed to kombu's ``Connection(transport_options=...)``, e.g.
``{"data_folder_in": d, "data_folder_out": d, "control_folder": c}`` for ``filesystem://``.

The body is the same JSON as on RabbitMQ, ``meta``, ``expires`` and ``retries`` included. Queue
and routing-key names follow the RabbitMQ transport (see :mod:`dj_cqrs.transport.kombu_connection`).

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
import threading
from collections.abc import Iterable
from typing import Any

from kombu.connection import Connection
from kombu.entity import Exchange, Queue

from dj_cqrs import encoding
from dj_cqrs.conf import cqrs_settings
from dj_cqrs.core.event import AnyPayload
from dj_cqrs.core.messages import ConsumeHandler
from dj_cqrs.core.names import routing_key_for
from dj_cqrs.exceptions import PublishFailed
from dj_cqrs.log import payload_context
from dj_cqrs.tracing import headers_of
from dj_cqrs.transport.base import BaseTransport, every_instance
from dj_cqrs.transport.kombu_connection import (
    connection_errors,
    cqrs_exchange,
    new_connection,
    refused,
    replica_queues,
)
from dj_cqrs.transport.kombu_consumer import KombuConsumer
from dj_cqrs.transport.kombu_dead_letters import KombuDeadLetterStore
from dj_cqrs.transport.resolution import through_instance

logger = logging.getLogger("django-cqrs.transport.kombu")


class KombuTransport(BaseTransport):
    supports_dead_letters = True
    background_publish = True
    supports_fail_fast = True

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
        return cqrs_exchange()

    @through_instance
    def produce(self, payload: AnyPayload) -> None:
        """Publish one payload (also callable on the class, as in django-cqrs: it then publishes
        through this process's ``KombuTransport``)."""
        self.produce_many([payload])

    def produce_many(self, payloads: Iterable[AnyPayload], *, fail_fast: bool = False) -> None:
        """Publish payloads one by one (kombu has no batch publish).

        ``fail_fast=True``: one connection attempt and one publish attempt, no retry and no sleep;
        ``PublishFailed`` at the first failure, logged at DEBUG only (the caller reports the
        outage). A refusal of the credentials or permissions raises
        :class:`~dj_cqrs.exceptions.BrokerRefused` in either mode."""
        exchange = self.exchange()
        for payload in payloads:
            self.publish_message(
                exchange,
                routing_key_for(payload),
                encoding.dumps_bytes(payload.to_dict(), allow_nan=True),
                headers_of(payload),
                payload,
                fail_fast=fail_fast,
            )

    def publish_message(
        self,
        exchange: Exchange | str,
        routing_key: str,
        body: bytes,
        headers: dict[str, Any] | None,
        payload: AnyPayload | None = None,
        declare: list[Any] | None = None,
        expiration: float | None = None,
        fail_fast: bool = False,
    ) -> None:
        """Publish one message on this thread's connection (kombu retries it
        ``master.publish_retries`` times; ``fail_fast``: once, the connection tried once);
        ``PublishFailed`` if it cannot be sent, ``BrokerRefused`` (not retried) if the broker
        refuses the credentials or permissions."""
        conn = self._connection()
        retries = cqrs_settings.master.publish_retries
        try:
            if fail_fast and not conn.connected:
                conn.ensure_connection(max_retries=0)  # one attempt (kombu retries for connect_timeout)
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
                retry=not fail_fast,
                retry_policy={"max_retries": retries, "interval_start": 0.2, "interval_step": 0.5},
                expiration=expiration,
            )
        except connection_errors(conn) as exc:
            self.clean_connection()
            refusal = refused(exc, conn)
            if refusal is not None:
                (logger.debug if fail_fast else logger.error)("CQRS publish refused: %s", refusal)
                raise refusal from exc
            extra = payload_context(payload) if payload is not None else None
            # fail_fast: the caller reports the outage (once), not one line per publish
            (logger.debug if fail_fast else logger.error)("CQRS publish failed: %r", exc, extra=extra)
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

    def queues(self, cqrs_ids: list[str], extra_keys: list[str] | None = None) -> tuple[Queue, Queue, Queue]:
        """The replica queue, its retry queue and its dead-letter queue."""
        return replica_queues(cqrs_ids, extra_keys)

    def dead_letter_store(self) -> KombuDeadLetterStore:
        return KombuDeadLetterStore(self)

    @through_instance
    def consume(self, cqrs_ids: list[str] | None = None, handler: ConsumeHandler | None = None, **kwargs: Any) -> None:
        """Run the consume loop (see :mod:`dj_cqrs.transport.kombu_consumer`) with ``handler``
        (default: the replica's, :func:`dj_cqrs.core.handlers.default_handler`)."""
        KombuConsumer(self, cqrs_ids=cqrs_ids, handler=handler, **kwargs).run()


__all__ = ["KombuTransport"]
