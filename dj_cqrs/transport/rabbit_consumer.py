"""The RabbitMQ consume loop: topology, delivery, and settling each message's outcome.

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
* A successor that cannot be published for any reason but the connection (a body that cannot be
  encoded again, headers pika refuses ...): the original body is dead-lettered instead (reason
  ``internal_error``), and the rest of the batch is settled as usual.
* Database unreachable: the message stays unacknowledged; the worker retries it with back-off
  while servicing the broker connection (heartbeats).
* Broker connection lost: reconnect with back-off and declare the topology again; the broker
  redelivers what was not acknowledged.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from dj_cqrs.conf import cqrs_settings
from dj_cqrs.core.messages import Action, InboundMessage, Outcome
from dj_cqrs.core.names import (
    DELAY_HEADER,
    DROPPED_HEADERS_HEADER,
    HEADER_PREFIX,
    binding_keys,
    dead_letter_binding_key,
    delay_of_queue,
    delay_queue_name,
)
from dj_cqrs.core.settlement import (
    dead_letter_ttl,
    failure_headers,
    minimal_failure_headers,
    retry_body,
    settle_failed,
)
from dj_cqrs.exceptions import ConnectionFailed
from dj_cqrs.process.lifecycle import Backoff, StopFlag, process_stop
from dj_cqrs.registry import replica_registry
from dj_cqrs.replica.batch import handle_batch_through_outages
from dj_cqrs.transport.rabbit_mq import (
    CONNECTION_ERRORS,
    message_properties,
    open_blocking_connection,
)
from dj_cqrs.utils import get_messages_prefetch_count_per_worker

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
    }


def declare_topology(channel: BlockingChannel, exchange: str, queue: str, dead_letter_queue: str, cqrs_ids: list[str]) -> None:
    """The exchange, the replica queue and the dead-letter queue with django-cqrs's bindings."""
    channel.exchange_declare(exchange=exchange, exchange_type="topic", durable=True)
    channel.queue_declare(queue, durable=True)
    channel.queue_declare(dead_letter_queue, durable=True)
    for cqrs_id in cqrs_ids:
        for key in binding_keys(queue, cqrs_id):
            channel.queue_bind(queue, exchange, routing_key=key)
        dead_letter_key = dead_letter_binding_key(dead_letter_queue, cqrs_id)
        channel.queue_bind(dead_letter_queue, exchange, routing_key=dead_letter_key)


class RabbitMQConsumer:
    """Consumes this replica service's queue until the stop flag is set.

    ``max_messages`` and ``idle_timeout`` end the loop early (tests, one-shot runs).
    """

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
        self.batch_size: int = cqrs_settings.replica.CQRS_BATCH_SIZE
        self.batch_max_wait: float = cqrs_settings.replica.CQRS_BATCH_MAX_WAIT
        # Twice the batch: the next batch is on its way while this one is applied.
        self.prefetch = get_messages_prefetch_count_per_worker()
        self.max_messages = max_messages
        self.idle_timeout = idle_timeout
        self.handled = 0
        self.reconnects = 0
        self._last_activity = time.monotonic()
        self.connection: BlockingConnection | None = None
        self.channel: BlockingChannel | None = None
        self._buffer: list[InboundMessage] = []
        self._retry_queues_declared: dict[int, float] = {}
        self._uncommitted = 0
        self._unsettled = False
        self._returned: list[tuple[str, Any, bytes]] = []

    # -- lifecycle -------------------------------------------------------------------------------

    def run(self) -> None:
        backoff = Backoff(0.5, 30.0)
        while not self._should_stop():
            try:
                self._connect()
                backoff.reset()
                self._loop()
            except RECOVERABLE as exc:
                delay = backoff.next()
                logger.warning("RabbitMQ connection lost (%r); reconnecting in %.1fs", exc, delay)
                self._close()
                self.reconnects += 1
                if self.stop.wait(delay):
                    break
            except Exception:  # noqa: BLE001 - the worker's top level: log, reconnect, carry on
                delay = backoff.next()
                logger.exception("CQRS consumer error; reconnecting in %.1fs", delay)
                self._close()
                self.reconnects += 1
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
        self._retry_queues_declared = {}
        self._uncommitted = 0
        self._unsettled = False
        self._returned = []
        self.connection = open_blocking_connection("consumer")
        channel = self.connection.channel()
        self.declare_topology(channel)
        channel.basic_qos(prefetch_count=self.prefetch)
        channel.add_on_return_callback(self._on_return)
        channel.tx_select()
        self.channel = channel
        channel.basic_consume(self.queue, self._on_message, auto_ack=False)
        logger.info(
            "CQRS consumer connected: queue=%s cqrs_ids=%s prefetch=%s", self.queue, self.cqrs_ids, self.prefetch
        )

    def declare_topology(self, channel: BlockingChannel) -> None:
        declare_topology(channel, self.exchange, self.queue, self.dead_letter_queue, self.cqrs_ids)

    def _close(self) -> None:
        connection, self.connection = self.connection, None
        self.channel = None
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

    def _loop(self) -> None:
        assert self.connection is not None
        while not self._should_stop():
            self.connection.process_data_events(time_limit=0 if self._buffer else 0.5)
            if self._buffer and len(self._buffer) < self.batch_size and self.batch_max_wait > 0:
                deadline = time.monotonic() + self.batch_max_wait
                while len(self._buffer) < self.batch_size and (left := deadline - time.monotonic()) > 0:
                    self.connection.process_data_events(time_limit=left)
            if self._buffer:
                batch, self._buffer = self._buffer[: self.batch_size], self._buffer[self.batch_size :]
                self._last_activity = time.monotonic()
                self.process(batch)

    def _service(self) -> None:
        """Keep the broker connection alive (heartbeats) while a batch is being applied."""
        if self.connection is not None:
            self.connection.process_data_events(0)

    def process(self, batch: list[InboundMessage]) -> None:
        """Apply a batch, then settle it: successors of retried and dead-lettered messages are
        published and every message acknowledged (one ``multiple`` ack when all are settled) in
        one AMQP transaction, after the database transactions committed. Messages still waiting
        for the database when asked to stop stay unacknowledged."""
        applied = handle_batch_through_outages(batch, self._sleep_servicing_heartbeats, tick=self._service)
        outcomes = dict(zip((m.handle for m in batch), applied, strict=True))
        settled = [m for m in batch if outcomes[m.handle].action is not Action.REQUEUE]
        for message in settled:
            self.settle(message, outcomes[message.handle], ack=False)
        assert self.channel is not None
        if settled and len(settled) == len(batch) and not self._unsettled:
            self.channel.basic_ack(delivery_tag=batch[-1].handle, multiple=True)
        else:
            for message in settled:
                self.channel.basic_ack(delivery_tag=message.handle)
            self._unsettled = True  # earlier deliveries stay unacknowledged: no more multiple acks
        self._uncommitted += len(settled)
        self.handled += len(settled)
        self.commit()

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

    def settle(self, message: InboundMessage, outcome: Outcome, ack: bool = True) -> None:
        """Publish the successor of a retried or dead-lettered message and (``ack``) acknowledge
        it, in the channel's transaction: nothing is final before :meth:`commit`.

        Raises only for a lost connection: a successor that cannot be published otherwise is
        replaced by a dead letter of the original body."""
        assert self.channel is not None
        try:
            if outcome.action is Action.RETRY:
                self._publish_retry(message, outcome)
            elif outcome.action is Action.DEAD_LETTER:
                self._publish_dead_letter(message, outcome)
        except RECOVERABLE:
            raise
        except Exception as exc:  # noqa: BLE001 - one message never holds up its batch
            self._dead_letter_unsettled(message, outcome, exc)
        if ack:
            self.channel.basic_ack(delivery_tag=message.handle)
            self._uncommitted += 1

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
                self.channel.basic_publish("", routing_key, body, properties=properties, mandatory=True)
            self.channel.tx_commit()
            self.connection.process_data_events(0)
            if attempts >= _RETURN_ATTEMPTS and self._returned:
                raise ConnectionFailed(f"re-publish to {self._returned[0][0]!r} keeps being returned")

    def _redeclare(self, name: str) -> None:
        assert self.channel is not None
        delay_ms = delay_of_queue(self.queue, name)
        if delay_ms is not None:
            self._declare_retry_queue(delay_ms)
        else:
            self.channel.queue_declare(name, durable=True)

    def _publish(self, routing_key: str, body: bytes, headers: dict[str, Any], expiration: str | None = None) -> None:
        """Publish through the default exchange (straight into a queue), inside the transaction."""
        assert self.channel is not None
        try:
            properties = message_properties(headers, expiration)
            self.channel.basic_publish("", routing_key, body, properties=properties, mandatory=True)
        except (TypeError, ValueError, OverflowError, UnicodeError) as exc:
            # A header the broker delivered but pika cannot encode back: keep ours only.
            logger.warning("CQRS message headers cannot be re-encoded (%r); dropping the foreign ones", exc)
            own = {k: v for k, v in headers.items() if isinstance(k, str) and k.startswith(HEADER_PREFIX)}
            own[DROPPED_HEADERS_HEADER] = True
            self.channel.basic_publish(
                "", routing_key, body, properties=message_properties(own, expiration), mandatory=True
            )

    def _publish_retry(self, message: InboundMessage, outcome: Outcome) -> None:
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
        self.channel.queue_declare(name, durable=True, arguments=retry_queue_arguments(self.queue, delay_ms))
        self._retry_queues_declared[delay_ms] = time.monotonic()

    def _publish_dead_letter(self, message: InboundMessage, outcome: Outcome, minimal: bool = False) -> None:
        ttl = dead_letter_ttl()
        expiration = str(ttl * 1000) if ttl else None
        headers = minimal_failure_headers(outcome) if minimal else failure_headers(message, outcome)
        # Straight into the dead-letter queue through the default exchange: routable even for a
        # cqrs_id this service has no binding for.
        self._publish(self.dead_letter_queue, message.body, headers, expiration)

    def _dead_letter_unsettled(self, message: InboundMessage, outcome: Outcome, exc: BaseException) -> None:
        """Dead-letter the original body of a message whose successor could not be published."""
        fallback = settle_failed(outcome, exc)
        logger.error(
            "CQRS message (routing_key=%r) could not be settled as %s; its original body is dead-lettered: %s",
            message.routing_key,
            outcome.action.value,
            fallback.detail,
            exc_info=exc,
        )
        try:
            self._publish_dead_letter(message, fallback)
        except RECOVERABLE:
            raise
        except Exception:  # noqa: BLE001 - e.g. the carried headers: reason and error only
            logger.exception("CQRS dead letter with full headers failed; publishing it with the reason only")
            self._publish_dead_letter(message, fallback, minimal=True)
