"""The kombu dead-letter queue as a :class:`~dj_cqrs.core.dead_letter_store.DeadLetterStore`.

Letters are read one at a time with ``basic_get`` and held unacknowledged; closing the session
requeues every letter not acknowledged, so a dump is non-destructive. Letters past their
``x-cqrs-dead-until`` (brokers without message TTLs, e.g. Redis) are dropped by ``retry`` and
``purge``. Only letters for this service's replica models are retried, so the exchange always has
a binding for them (kombu's virtual brokers drop unroutable messages silently).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from kombu.transport.virtual import Channel as VirtualChannel

from dj_cqrs.core.dead_letter_store import DeadLetter, DeadLetterSession, DeadLetterStore
from dj_cqrs.exceptions import ConnectionFailed
from dj_cqrs.registry import replica_registry
from dj_cqrs.transport.kombu_connection import (
    MessagePublisher,
    connection_errors,
    cqrs_exchange,
    inbound,
    new_connection,
    replica_queues,
)


class _Session(DeadLetterSession):
    def __init__(self, publisher: MessagePublisher, channel: Any, dlq: Any, queue: Any) -> None:
        self.publisher = publisher
        self.channel = channel
        self.dlq = dlq(channel)
        self.queue = queue
        self.held: dict[int, Any] = {}

    def get(self) -> DeadLetter | None:
        message = self.dlq.get(no_ack=False, accept=None)
        if message is None:
            return None
        self.held[id(message)] = message
        received = inbound(message)
        # An AMQP broker tells how many letters are left with each one; kombu's virtual
        # transports (Redis ...) do not.
        remaining = message.delivery_info.get("message_count")
        return DeadLetter(
            body=received.body,
            headers=received.headers,
            routing_key=received.routing_key,
            handle=message,
            remaining=remaining if isinstance(remaining, int) else None,
        )

    def ack(self, letter: DeadLetter) -> None:
        letter.handle.ack()
        self.held.pop(id(letter.handle), None)

    def publish(self, routing_key: str, body: bytes, headers: dict[str, Any]) -> None:
        self.publisher.publish_message(cqrs_exchange(), routing_key, body, headers, declare=[self.queue])

    def release(self) -> None:
        held, self.held = self.held, {}
        if not isinstance(self.channel, VirtualChannel):
            # An AMQP broker: closing the channel gives back every letter held on it in one step;
            # rejecting them one by one, RabbitMQ takes seconds to have them all back, and a
            # command started meanwhile would count only some (see rabbit_dead_letters).
            with contextlib.suppress(Exception):
                self.channel.close()
            return
        # A virtual transport (Redis ...) requeues each letter at once; in the order they were
        # read, so a queue read to its end keeps its order.
        for message in held.values():
            with contextlib.suppress(Exception):
                message.requeue()


class KombuDeadLetterStore(DeadLetterStore):
    """``dead_letter_<queue>`` of this service; letters are retried through ``publisher``
    (the ``KombuTransport``)."""

    def __init__(self, publisher: MessagePublisher) -> None:
        self.publisher = publisher

    @contextlib.contextmanager
    def _channel(self) -> Iterator[tuple[Any, Any, Any]]:
        conn = new_connection()
        errors = connection_errors(conn)
        try:
            conn.ensure_connection(max_retries=1)
            queue, _retry, dlq = replica_queues(sorted(replica_registry.models))
            channel = conn.channel()
            queue(channel).declare()
            dlq(channel).declare()
            yield channel, queue, dlq
        except errors as exc:
            raise ConnectionFailed(f"broker error while handling dead letters: {exc!r}") from exc
        finally:
            with contextlib.suppress(Exception):
                conn.release()

    def count(self) -> int:
        with self._channel() as (channel, _queue, dlq):
            # Not passive: Redis has no empty queues, a passive declare of one fails.
            result = dlq(channel).queue_declare()
            return int(result.message_count)

    @contextlib.contextmanager
    def open(self) -> Iterator[DeadLetterSession]:
        with self._channel() as (channel, queue, dlq):
            session = _Session(self.publisher, channel, dlq, queue)
            try:
                yield session
            finally:
                session.release()

    def purge_all(self) -> int:
        with self._channel() as (channel, _queue, dlq):
            return int(dlq(channel).purge() or 0)


__all__ = ["KombuDeadLetterStore"]
