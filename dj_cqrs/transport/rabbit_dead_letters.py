"""The RabbitMQ dead-letter queue as a :class:`~dj_cqrs.core.dead_letter_store.DeadLetterStore`.

Letters are read with ``basic.get`` (no prefetch window, one at a time) and left unacknowledged;
closing the session closes the channel they were read on, which gives back every letter not
acknowledged, so a dump is non-destructive. Retries are published on a separate confirm-mode channel with
``mandatory``; a letter is acknowledged only after its re-publish is confirmed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pika.exceptions

from dj_cqrs.conf import cqrs_settings
from dj_cqrs.core.dead_letter_store import (
    DeadLetter,
    DeadLetterSession,
    DeadLetterStore,
    Unroutable,
)
from dj_cqrs.exceptions import ConnectionFailed, PublishFailed
from dj_cqrs.registry import replica_registry
from dj_cqrs.transport.rabbit_connection import (
    CONNECTION_ERRORS,
    message_properties,
    open_blocking_connection,
)
from dj_cqrs.transport.rabbit_topology import declare_replica_topology

if TYPE_CHECKING:
    from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection


class _Session(DeadLetterSession):
    def __init__(self, connection: BlockingConnection, queue: str, exchange: str) -> None:
        self.connection = connection
        self.queue = queue
        self.exchange = exchange
        self.get_channel: BlockingChannel = connection.channel()
        self.publish_channel: BlockingChannel = connection.channel()
        self.publish_channel.confirm_delivery()

    def get(self) -> DeadLetter | None:
        method, properties, body = self.get_channel.basic_get(self.queue, auto_ack=False)
        if method is None:
            return None
        return DeadLetter(
            body=body,
            headers=dict(properties.headers or {}),
            routing_key=method.routing_key or "",
            handle=method.delivery_tag,
            remaining=int(method.message_count),
        )

    def ack(self, letter: DeadLetter) -> None:
        self.get_channel.basic_ack(delivery_tag=letter.handle)

    def publish(self, routing_key: str, body: bytes, headers: dict[str, Any]) -> None:
        try:
            self.publish_channel.basic_publish(
                exchange=self.exchange,
                routing_key=routing_key,
                body=body,
                properties=message_properties(headers),
                mandatory=True,
            )
        except pika.exceptions.UnroutableError as exc:
            raise Unroutable(routing_key) from exc
        except pika.exceptions.NackError as exc:
            raise PublishFailed(f"the broker refused the re-publish to {routing_key!r}") from exc

    def release(self) -> None:
        # Closing the channel gives back every letter still unacknowledged on it, and the queue
        # takes them back in one step when the channel ends. A ``basic.nack`` (multiple, requeue)
        # or ``basic.recover`` of the same letters is applied by RabbitMQ 3.x a little at a time:
        # 10,000 letters take about 25 s to be back, and a command started meanwhile (``dump``
        # after ``summary``) counted only the ones back so far (a passive ``queue.declare`` is
        # answered ahead of the requeue still in progress, so it could not wait for it either).
        if self.get_channel.is_open:
            self.get_channel.close()


class RabbitDeadLetterStore(DeadLetterStore):
    """``replica.dead_letter_queue`` of this service on the configured RabbitMQ."""

    def __init__(self) -> None:
        self.queue: str = cqrs_settings.queue
        self.dead_letter_queue = cqrs_settings.dead_letter_queue
        self.exchange = cqrs_settings.exchange

    @contextlib.contextmanager
    def _connection(self) -> Iterator[BlockingConnection]:
        connection = open_blocking_connection("dead-letters")
        try:
            channel = connection.channel()
            declare_replica_topology(
                channel, self.exchange, self.queue, self.dead_letter_queue, sorted(replica_registry.models)
            )
            channel.close()
            yield connection
        except CONNECTION_ERRORS as exc:
            raise ConnectionFailed(f"RabbitMQ error while handling dead letters: {exc!r}") from exc
        finally:
            with contextlib.suppress(Exception):
                if connection.is_open:
                    connection.close()

    def count(self) -> int:
        with self._connection() as connection:
            channel = connection.channel()
            return int(channel.queue_declare(self.dead_letter_queue, passive=True).method.message_count)

    @contextlib.contextmanager
    def open(self) -> Iterator[DeadLetterSession]:
        with self._connection() as connection:
            session = _Session(connection, self.dead_letter_queue, self.exchange)
            try:
                yield session
            finally:
                with contextlib.suppress(*CONNECTION_ERRORS):
                    session.release()

    def purge_all(self) -> int:
        with self._connection() as connection:
            channel = connection.channel()
            return int(channel.queue_purge(self.dead_letter_queue).method.message_count)
