"""The RabbitMQ consume loop: topology, delivery, and settling each message's outcome.

A message is acknowledged only after its outcome is final: applied (committed) or ignored, or
re-published (with a confirm) to a retry queue or to the dead-letter queue. When the replica
database is unreachable the message stays unacknowledged while the worker waits for it with
back-off; when the broker connection is lost, the worker reconnects with back-off and declares its
topology again (unacknowledged messages are redelivered by the broker).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any

import pika
import pika.exceptions

from dj_cqrs import encoding
from dj_cqrs.conf import cqrs_settings
from dj_cqrs.exceptions import ConnectionFailed
from dj_cqrs.registry import replica_registry
from dj_cqrs.replica.consumer import ROUTING_KEY_HEADER, Action, InboundMessage, Outcome, handle
from dj_cqrs.replica.lifecycle import Backoff, StopFlag, process_stop
from dj_cqrs.transport.rabbit_mq import CONNECTION_ERRORS, connection_parameters, message_properties

if TYPE_CHECKING:
    from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

logger = logging.getLogger("django-cqrs.transport.rabbitmq")

FIRST_FAILURE_HEADER = "x-cqrs-first-failure"
RETRY_QUEUE_EXPIRES_EXTRA_MS = 15 * 60 * 1000


def retry_queue_name(queue: str, delay_ms: int) -> str:
    return f"{queue}.retry.{delay_ms}"


def failure_headers(message: InboundMessage, outcome: Outcome) -> dict[str, Any]:
    """Headers that travel with a retried or dead-lettered message (the body stays as is)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    headers = dict(message.headers or {})
    headers.setdefault(ROUTING_KEY_HEADER, message.routing_key)
    headers.setdefault(FIRST_FAILURE_HEADER, now)
    headers["x-cqrs-last-failure"] = now
    headers["x-cqrs-reason"] = outcome.reason
    headers["x-cqrs-error"] = (outcome.detail or "")[:2000]
    if outcome.exception is not None:
        headers["x-cqrs-exception"] = type(outcome.exception).__name__
    headers["x-cqrs-retries"] = outcome.payload.retries if outcome.payload is not None else 0
    headers["x-cqrs-worker"] = f"{socket.gethostname()}:{os.getpid()}"
    headers["x-cqrs-queue"] = cqrs_settings.queue
    return headers


class RabbitMQConsumer:
    """Consumes this replica service's queue until the stop flag is set."""

    def __init__(
        self,
        cqrs_ids: list[str] | None = None,
        stop: StopFlag | None = None,
        max_messages: int | None = None,
        idle_timeout: float | None = None,
    ) -> None:
        self.cqrs_ids = list(cqrs_ids) if cqrs_ids else sorted(replica_registry.models)
        self.stop = stop or process_stop
        self.queue: str = cqrs_settings.queue
        self.dead_letter_queue = cqrs_settings.dead_letter_queue
        self.exchange = cqrs_settings.exchange
        self.prefetch = cqrs_settings.replica.CQRS_BATCH_SIZE
        self.max_messages = max_messages
        self.idle_timeout = idle_timeout
        self.handled = 0
        self._last_activity = time.monotonic()
        self.connection: BlockingConnection | None = None
        self.channel: BlockingChannel | None = None
        self.publish_channel: BlockingChannel | None = None
        self._buffer: list[InboundMessage] = []
        self._declared_retry_queues: set[int] = set()

    # -- lifecycle -------------------------------------------------------------------------------

    def run(self) -> None:
        backoff = Backoff(0.5, 30.0)
        while not self._should_stop():
            try:
                self._connect()
                backoff.reset()
                self._loop()
            except (ConnectionFailed, *CONNECTION_ERRORS) as exc:
                delay = backoff.next()
                logger.warning("RabbitMQ connection lost (%r); reconnecting in %.1fs", exc, delay)
                self._close()
                if self.stop.wait(delay):
                    break
        self._close()

    def _should_stop(self) -> bool:
        if self.stop.is_set():
            return True
        if self.max_messages is not None and self.handled >= self.max_messages:
            return True
        if self.idle_timeout is not None and time.monotonic() - self._last_activity > self.idle_timeout:
            return True
        return False

    def _connect(self) -> None:
        self._buffer = []
        self._declared_retry_queues = set()
        try:
            self.connection = pika.BlockingConnection(connection_parameters("consumer"))
        except CONNECTION_ERRORS as exc:
            raise ConnectionFailed(f"cannot connect to RabbitMQ: {exc!r}") from exc
        channel = self.connection.channel()
        self.declare_topology(channel)
        channel.basic_qos(prefetch_count=self.prefetch)
        publish_channel = self.connection.channel()
        publish_channel.confirm_delivery()
        self.channel = channel
        self.publish_channel = publish_channel
        channel.basic_consume(self.queue, self._on_message, auto_ack=False)
        logger.info(
            "CQRS consumer connected: queue=%s cqrs_ids=%s prefetch=%s", self.queue, self.cqrs_ids, self.prefetch
        )

    def declare_topology(self, channel: BlockingChannel) -> None:
        channel.exchange_declare(exchange=self.exchange, exchange_type="topic", durable=True)
        channel.queue_declare(self.queue, durable=True)
        channel.queue_declare(self.dead_letter_queue, durable=True)
        for cqrs_id in self.cqrs_ids:
            channel.queue_bind(self.queue, self.exchange, routing_key=cqrs_id)
            channel.queue_bind(self.queue, self.exchange, routing_key=f"cqrs.{self.queue}.{cqrs_id}")
            channel.queue_bind(
                self.dead_letter_queue, self.exchange, routing_key=f"cqrs.{self.dead_letter_queue}.{cqrs_id}"
            )

    def _close(self) -> None:
        connection, self.connection = self.connection, None
        self.channel = self.publish_channel = None
        if connection is not None:
            try:
                if connection.is_open:
                    connection.close()
            except Exception:  # noqa: BLE001 - closing a connection that is already broken
                pass

    # -- delivery --------------------------------------------------------------------------------

    def _on_message(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        self._buffer.append(
            InboundMessage(
                body=body,
                routing_key=method.routing_key or "",
                headers=dict(properties.headers or {}),
                handle=method.delivery_tag,
            )
        )

    def _loop(self) -> None:
        assert self.connection is not None
        while not self._should_stop():
            self.connection.process_data_events(time_limit=0 if self._buffer else 0.5)
            if self._buffer:
                batch, self._buffer = self._buffer, []
                self._last_activity = time.monotonic()
                self.process(batch)

    def process(self, batch: list[InboundMessage]) -> None:
        for index, message in enumerate(batch):
            if self.stop.is_set():
                # Leave the rest unacknowledged: the broker redelivers them.
                return
            outcome = handle(message)
            backoff = Backoff(0.5, 30.0)
            while outcome.action is Action.REQUEUE:
                delay = backoff.next()
                logger.warning("Replica database unavailable; retrying the message in %.1fs", delay)
                if self._sleep_servicing_heartbeats(delay):
                    return
                outcome = handle(message)
            self.settle(message, outcome)
            self.handled += 1

    def _sleep_servicing_heartbeats(self, seconds: float) -> bool:
        """Wait, keeping the broker connection alive; True if asked to stop."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.stop.is_set():
                return True
            assert self.connection is not None
            self.connection.process_data_events(time_limit=min(0.5, max(deadline - time.monotonic(), 0)))
        return self.stop.is_set()

    # -- outcomes --------------------------------------------------------------------------------

    def settle(self, message: InboundMessage, outcome: Outcome) -> None:
        assert self.channel is not None
        if outcome.action is Action.RETRY:
            self._publish_retry(message, outcome)
        elif outcome.action is Action.DEAD_LETTER:
            self._publish_dead_letter(message, outcome)
        self.channel.basic_ack(delivery_tag=message.handle)

    def _confirmed_publish(self, exchange: str, routing_key: str, body: bytes, headers: dict[str, Any], expiration: str | None = None) -> None:
        assert self.publish_channel is not None
        self.publish_channel.basic_publish(
            exchange=exchange,
            routing_key=routing_key,
            body=body,
            properties=message_properties(headers, expiration),
            mandatory=True,
        )

    def _publish_retry(self, message: InboundMessage, outcome: Outcome) -> None:
        assert outcome.payload is not None and self.publish_channel is not None
        delay_ms = max(int(round(outcome.delay * 1000)), 0)
        payload = outcome.payload.with_changes(retries=outcome.payload.retries + 1)
        body = encoding.dumps_bytes(encoding.restore_exact(payload.to_dict()))
        headers = failure_headers(message, outcome)
        if delay_ms == 0:
            self._confirmed_publish("", self.queue, body, headers)
            return
        name = retry_queue_name(self.queue, delay_ms)
        if delay_ms not in self._declared_retry_queues:
            self.publish_channel.queue_declare(
                name,
                durable=True,
                arguments={
                    "x-message-ttl": delay_ms,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": self.queue,
                    "x-expires": delay_ms + RETRY_QUEUE_EXPIRES_EXTRA_MS,
                },
            )
            self._declared_retry_queues.add(delay_ms)
        self._confirmed_publish("", name, body, headers)

    def _publish_dead_letter(self, message: InboundMessage, outcome: Outcome) -> None:
        ttl = cqrs_settings.replica.dead_message_ttl
        expiration = str(int(ttl) * 1000) if ttl else None
        headers = failure_headers(message, outcome)
        # Straight into the dead-letter queue through the default exchange: routable even for a
        # cqrs_id this service has no binding for.
        self._confirmed_publish("", self.dead_letter_queue, message.body, headers, expiration)
