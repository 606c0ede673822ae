"""The RabbitMQ primitives of the consume loop (:mod:`dj_cqrs.transport.consume_loop`): delivery,
retry queues, and settling each message's outcome.

Settlement is transactional (AMQP ``tx``) on the consuming channel: the re-publish of a retry or a
dead letter and the acknowledgement of the message it replaces are committed together, so a worker
that dies at any moment leaves either the original message (redelivered with its old ``retries``)
or its successor, never both and never neither.

* Retry: the body (``retries + 1``) goes to ``<queue>.retry.<delay ms>``, a durable queue whose
  ``x-message-ttl`` is the delay and which dead-letters into the replica queue through the default
  exchange. Nothing is held by the worker, so a retry survives a crash or restart of every worker.
  ``x-cqrs-routing-key`` keeps the master's routing key (a direct sync stays direct).
* Dead letter: the original body goes to ``replica.dead_letter_queue`` with ``expiration =
  dead_message_ttl`` and ``x-cqrs-*`` headers saying why (see :mod:`dj_cqrs.core.settlement`).
* A successor that cannot be published for any reason but the connection: see the consume loop.
* Database unreachable: the message stays unacknowledged; the handler retries it with back-off
  while the worker services the broker connection (heartbeats).
* Broker connection lost: reconnect with back-off and declare the topology again; the broker
  redelivers what was not acknowledged.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from dj_cqrs.conf import cqrs_settings
from dj_cqrs.core.messages import InboundMessage, Outcome
from dj_cqrs.core.names import (
    DELAY_HEADER,
    DROPPED_HEADERS_HEADER,
    HEADER_PREFIX,
    delay_of_queue,
    delay_queue_name,
)
from dj_cqrs.core.settlement import (
    dead_letter_ttl,
    failure_headers,
    minimal_failure_headers,
    retry_body,
)
from dj_cqrs.exceptions import ConnectionFailed
from dj_cqrs.transport.consume_loop import ConsumeLoop
from dj_cqrs.transport.rabbit_connection import (
    CONNECTION_ERRORS,
    message_properties,
    open_blocking_connection,
)
from dj_cqrs.transport.rabbit_nodes import BrokerNodes
from dj_cqrs.transport.rabbit_topology import (
    declare_replica_topology,
    queue_type_arguments,
    refusals_translated,
    replica_queue_arguments,
)

if TYPE_CHECKING:
    from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

logger = logging.getLogger("django-cqrs.transport.rabbitmq")

#: A retry queue lives this long after its last declaration (RabbitMQ ``x-expires``) beyond its TTL.
RETRY_QUEUE_EXPIRES_EXTRA_MS = 15 * 60 * 1000
#: Retry queues are declared again at least this often, which renews their ``x-expires`` lease.
RETRY_QUEUE_REDECLARE_SECONDS = 60.0
_RETURN_ATTEMPTS = 3
#: Errors after which the connection is re-opened (the broker redelivers what is unacknowledged).
RECOVERABLE: tuple[type[BaseException], ...] = (ConnectionFailed, *CONNECTION_ERRORS)


def retry_queue_arguments(queue: str, delay_ms: int) -> dict[str, Any]:
    """Arguments of ``<queue>.retry.<delay_ms>``; they must never change for a given name."""
    return {
        "x-message-ttl": delay_ms,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": queue,
        "x-expires": delay_ms + RETRY_QUEUE_EXPIRES_EXTRA_MS,
        **queue_type_arguments(),
    }


class RabbitMQConsumer(ConsumeLoop):
    """The consume loop on RabbitMQ: publishes and acknowledgements of a batch in one AMQP
    transaction on the consuming channel."""

    logger = logger
    broker_name = "RabbitMQ"
    acks_batches = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recoverable = RECOVERABLE
        self.exchange: str = cqrs_settings.exchange
        # Twice the batch: the next batch is on its way while this one is applied.
        self.prefetch: int = cqrs_settings.replica.prefetch_count
        self.connection: BlockingConnection | None = None
        self.channel: BlockingChannel | None = None
        #: The broker node(s): after a lost connection the next one tries another node first.
        self.nodes = BrokerNodes("consumer")
        self._buffer: list[InboundMessage] = []
        self._retry_queues_declared: dict[int, float] = {}
        self._uncommitted = 0
        self._unsettled = False
        self._returned: list[tuple[str, Any, bytes]] = []

    # -- connection ------------------------------------------------------------------------------

    def open(self) -> None:
        self._buffer = []
        self._retry_queues_declared = {}
        self._uncommitted = 0
        self._unsettled = False
        self._returned = []
        self.connection = open_blocking_connection("consumer", self.nodes)
        channel = self.connection.channel()
        self.declare_topology(channel)
        channel.basic_qos(prefetch_count=self.prefetch)
        channel.add_on_return_callback(self._on_return)
        channel.tx_select()
        self.channel = channel
        channel.basic_consume(self.queue, self._on_message, auto_ack=False)
        logger.info(
            "CQRS consumer connected: queue=%s cqrs_ids=%s event_bindings=%s prefetch=%s",
            self.queue,
            self.cqrs_ids,
            self.route_binding_keys,
            self.prefetch,
        )

    def declare_topology(self, channel: BlockingChannel) -> None:
        declare_replica_topology(
            channel,
            self.exchange,
            self.queue,
            self.dead_letter_queue,
            self.cqrs_ids,
            self.route_binding_keys,
        )

    def close(self, error: BaseException | None = None) -> None:
        connection, self.connection = self.connection, None
        self.channel = None
        if isinstance(error, CONNECTION_ERRORS):
            self.nodes.lost()  # a cluster's next connection starts with another node
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

    def _on_return(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        self._returned.append((method.routing_key, properties, body))

    def poll(self, timeout: float) -> None:
        assert self.connection is not None
        self.connection.process_data_events(time_limit=timeout)

    def poll_timeout(self) -> float:
        return 0 if self._buffer else 0.5

    def buffered(self) -> int:
        return len(self._buffer)

    def take(self) -> list[InboundMessage]:
        batch, self._buffer = self._buffer[: self.batch_size], self._buffer[self.batch_size :]
        return batch

    def service(self) -> None:
        """Keep the broker connection alive (heartbeats) while a batch is being applied."""
        if self.connection is not None:
            self.connection.process_data_events(0)

    def wait(self, seconds: float) -> bool:
        """Wait, keeping the broker connection alive; True if asked to stop."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.stop.is_set():
                return True
            assert self.connection is not None
            self.connection.process_data_events(
                time_limit=min(0.5, max(deadline - time.monotonic(), 0))
            )
        return self.stop.is_set()

    # -- settling --------------------------------------------------------------------------------

    def ack(self, messages: list[InboundMessage], whole_batch: bool) -> None:
        """Acknowledge in the channel's transaction: one ``multiple`` ack for a whole batch while
        no earlier delivery was left unacknowledged, else one ack per message."""
        assert self.channel is not None
        if messages and whole_batch and not self._unsettled:
            self.channel.basic_ack(delivery_tag=messages[-1].handle, multiple=True)
        else:
            for message in messages:
                self.channel.basic_ack(delivery_tag=message.handle)
            self._unsettled = True  # earlier deliveries stay unacknowledged: no more multiple acks
        self._uncommitted += len(messages)

    def commit(self) -> None:
        """Commit the pending publishes and acknowledgements; re-publish anything returned."""
        if not self._uncommitted:
            return
        assert self.channel is not None and self.connection is not None
        self.channel.tx_commit()
        self._uncommitted = 0
        # basic.return frames arrive before tx.commit-ok: dispatch them now.
        self.connection.process_data_events(0)
        attempts = 0
        while self._returned:
            attempts += 1
            returned, self._returned = self._returned, []
            for routing_key, properties, body in returned:
                logger.error(
                    "CQRS re-publish to %r was returned as unroutable (queue deleted?); declaring it again"
                    " and re-publishing (attempt %s)",
                    routing_key,
                    attempts,
                )
                self._redeclare(routing_key)
                self.channel.basic_publish(
                    "", routing_key, body, properties=properties, mandatory=True
                )
            self.channel.tx_commit()
            self.connection.process_data_events(0)
            if attempts >= _RETURN_ATTEMPTS and self._returned:
                raise ConnectionFailed(
                    f"re-publish to {self._returned[0][0]!r} keeps being returned"
                )

    def _redeclare(self, name: str) -> None:
        assert self.channel is not None
        delay_ms = delay_of_queue(self.queue, name)
        if delay_ms is not None:
            self._declare_retry_queue(delay_ms)
        elif name == self.dead_letter_queue:
            self.channel.queue_declare(name, durable=True, arguments=queue_type_arguments() or None)
        else:
            arguments = replica_queue_arguments(self.dead_letter_queue, False)
            self.channel.queue_declare(name, durable=True, arguments=arguments or None)

    def _publish(
        self, routing_key: str, body: bytes, headers: dict[str, Any], expiration: str | None = None
    ) -> None:
        """Publish through the default exchange (straight into a queue), inside the transaction."""
        assert self.channel is not None
        try:
            properties = message_properties(headers, expiration)
            self.channel.basic_publish("", routing_key, body, properties=properties, mandatory=True)
        except (TypeError, ValueError, OverflowError, UnicodeError) as exc:
            # A header the broker delivered but pika cannot encode back: keep ours only.
            logger.warning(
                "CQRS message headers cannot be re-encoded (%r); dropping the foreign ones", exc
            )
            own = {
                k: v
                for k, v in headers.items()
                if isinstance(k, str) and k.startswith(HEADER_PREFIX)
            }
            own[DROPPED_HEADERS_HEADER] = True
            self.channel.basic_publish(
                "",
                routing_key,
                body,
                properties=message_properties(own, expiration),
                mandatory=True,
            )

    def publish_retry(self, message: InboundMessage, outcome: Outcome) -> None:
        assert outcome.payload is not None and self.channel is not None
        delay_ms = max(int(round(outcome.delay * 1000)), 0)
        headers = failure_headers(message, outcome)
        headers[DELAY_HEADER] = delay_ms
        body = retry_body(outcome.payload)
        if delay_ms == 0:
            self._publish(self.queue, body, headers)
            return
        declared = self._retry_queues_declared.get(delay_ms)
        if declared is None or time.monotonic() - declared > RETRY_QUEUE_REDECLARE_SECONDS:
            self._declare_retry_queue(delay_ms)
        self._publish(delay_queue_name(self.queue, delay_ms), body, headers)

    def _declare_retry_queue(self, delay_ms: int) -> None:
        """Declare ``<queue>.retry.<delay_ms>`` (which renews its ``x-expires`` lease)."""
        assert self.channel is not None
        name = delay_queue_name(self.queue, delay_ms)
        with refusals_translated():
            self.channel.queue_declare(
                name, durable=True, arguments=retry_queue_arguments(self.queue, delay_ms)
            )
        self._retry_queues_declared[delay_ms] = time.monotonic()

    def publish_dead_letter(
        self, message: InboundMessage, outcome: Outcome, minimal: bool = False
    ) -> None:
        ttl = dead_letter_ttl()
        expiration = str(ttl * 1000) if ttl else None
        headers = minimal_failure_headers(outcome) if minimal else failure_headers(message, outcome)
        # Straight into the dead-letter queue through the default exchange: routable even for a
        # cqrs_id this service has no binding for.
        self._publish(self.dead_letter_queue, message.body, headers, expiration)


__all__ = ["RECOVERABLE", "RabbitMQConsumer", "retry_queue_arguments"]
