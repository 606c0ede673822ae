"""The kombu primitives of the consume loop (:mod:`dj_cqrs.transport.consume_loop`): Redis, AMQP
through py-amqp, anything kombu speaks.

Outcomes are settled as on RabbitMQ (see :mod:`dj_cqrs.transport.rabbit_consumer`), with what a
generic kombu broker offers:

* Retry: the body (``retries + 1``) is published to ``<queue>.retry`` with the header
  ``x-cqrs-not-before`` (epoch seconds), then the original is acknowledged. A second consumer, on
  its own channel, reads the retry queue and holds early messages unacknowledged until they are
  due; its prefetch, ``replica.delay_queue_max_size``, bounds what a worker holds, so failing
  messages never block the replica queue. A held message belongs to the broker until it is
  acknowledged: if the worker dies it is redelivered (AMQP: at once; Redis: after the
  ``visibility_timeout`` transport option) with the right ``retries`` counter. On Redis a message
  is never held longer than three quarters of the visibility timeout: one whose delay is longer is
  put back at the tail of the retry queue at that point, so a live worker's messages are not
  restored (duplicated) behind its back.
* Known limit of kombu's Redis transport: it pops a message from the list before it records it
  as unacknowledged, so a worker killed in that instant loses the message in flight. Use an AMQP
  broker (RabbitMQ transport) where that matters.
* Dead letter: the original body goes to ``dead_letter_<queue>`` with the ``x-cqrs-*`` reason
  headers, ``expiration`` (honoured by AMQP brokers) and ``x-cqrs-dead-until`` (epoch seconds,
  for brokers without message TTLs: ``cqrs_dead_letters`` drops letters past it).
* The successor is published before the original is acknowledged: a crash in between can leave
  both (a duplicate, which the revision checks ignore), never neither.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from typing import Any

from kombu.messaging import Consumer

from dj_cqrs.conf import cqrs_settings
from dj_cqrs.core.messages import HARD_MAX_DELAY, InboundMessage, Outcome
from dj_cqrs.core.names import DEAD_UNTIL_HEADER, DELAY_HEADER, NOT_BEFORE_HEADER, retry_queue_name
from dj_cqrs.core.settlement import (
    dead_letter_ttl,
    failure_headers,
    minimal_failure_headers,
    retry_body,
)
from dj_cqrs.exceptions import PublishFailed
from dj_cqrs.transport.consume_loop import ConsumeLoop
from dj_cqrs.transport.kombu_connection import (
    MessagePublisher,
    connection_errors,
    inbound,
    new_connection,
    replica_queues,
)

logger = logging.getLogger("django-cqrs.transport.kombu")


def _float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    if number is None or number != number:  # NaN
        return None
    return number


class KombuConsumer(ConsumeLoop):
    """The consume loop through kombu: this replica service's queue and its retry queue.

    Successors are published through ``publisher`` (the ``KombuTransport``'s own connection).
    """

    logger = logger
    broker_name = "Broker"

    def __init__(self, publisher: MessagePublisher, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.publisher = publisher
        self.retry_queue = retry_queue_name(self.queue)
        self.max_held = 0
        self.recoverable = (PublishFailed,)
        self.connection: Any = None
        self._consumers: list[Any] = []
        self._buffer: list[tuple[InboundMessage, bool]] = []
        self._held: list[tuple[float, int, float, InboundMessage]] = []
        self._seq = itertools.count()
        self._hold_limit: float | None = None

    # -- connection ------------------------------------------------------------------------------

    def open(self) -> None:
        self._buffer = []
        self._held = []
        conn = self.connection = new_connection()
        self.recoverable = connection_errors(conn) + (PublishFailed,)
        # semantic conventions: "rabbitmq" for AMQP brokers, else kombu's transport ("redis" ...)
        driver = str(getattr(conn.transport, "driver_type", "") or "")
        self.messaging_system = "rabbitmq" if driver == "amqp" else driver or "kombu"
        conn.ensure_connection(max_retries=1)
        queue, retry_queue, dlq = replica_queues(self.cqrs_ids, self.route_binding_keys)
        main_channel = conn.channel()
        retry_channel = conn.channel()
        queue(main_channel).declare()
        retry_queue(main_channel).declare()
        dlq(main_channel).declare()
        prefetch = max(cqrs_settings.consumer_prefetch_count, self.batch_size)
        max_held = cqrs_settings.replica.delay_queue_max_size
        visibility = getattr(retry_channel, "visibility_timeout", None)
        self._hold_limit = float(visibility) * 0.75 if isinstance(visibility, (int, float)) and visibility else None
        main = Consumer(main_channel, queues=[queue], on_message=self._on_main, prefetch_count=prefetch)
        retries = Consumer(
            retry_channel, queues=[retry_queue], on_message=self._on_retry, prefetch_count=max_held or 0
        )
        for consumer in (main, retries):
            consumer.consume()
            self._consumers.append(consumer)
        logger.info(
            "CQRS consumer connected: queue=%s cqrs_ids=%s event_bindings=%s prefetch=%s delay_queue_max_size=%s",
            self.queue,
            self.cqrs_ids,
            self.route_binding_keys,
            prefetch,
            max_held,
        )

    def close(self, error: BaseException | None = None) -> None:
        """Cancel the consumers (unless the connection is what failed, as kombu's
        ``Consumer.__exit__``) and release the connection; what was buffered or held
        unacknowledged is redelivered by the broker."""
        consumers, self._consumers = self._consumers, []
        conn, self.connection = self.connection, None
        self._buffer = []
        self._held = []
        if conn is None:
            return
        if not isinstance(error, tuple(conn.connection_errors)):
            for consumer in reversed(consumers):
                try:
                    consumer.cancel()
                except Exception:  # noqa: BLE001 - the connection is being discarded anyway
                    pass
        try:
            conn.release()
        except Exception:  # noqa: BLE001 - the connection is being discarded anyway
            pass

    # -- delivery --------------------------------------------------------------------------------

    def _on_main(self, message: Any) -> None:
        self._buffer.append((inbound(message), False))

    def _on_retry(self, message: Any) -> None:
        self._buffer.append((inbound(message), True))

    def poll(self, timeout: float) -> None:
        try:
            self.connection.drain_events(timeout=timeout)
        except TimeoutError:
            pass

    def poll_timeout(self) -> float:
        if self._buffer:
            return 0.01
        if self._held:
            return max(0.01, min(0.5, self._held[0][0] - time.time()))
        return 0.5

    def buffered(self) -> int:
        return len(self._buffer)

    def take(self) -> list[InboundMessage]:
        """The retries now due and what was delivered, but for retries still early: those are
        held (unacknowledged) until they are due."""
        now = time.time()
        ready: list[InboundMessage] = []
        while self._held and self._held[0][0] <= now:
            ready.append(heapq.heappop(self._held)[3])
        self._requeue_overheld()
        batch, self._buffer = self._buffer, []
        if batch:
            self.mark_active()
        for message, from_retry_queue in batch:
            if from_retry_queue:
                not_before = self._not_before(message, now)
                if not_before > time.time():
                    heapq.heappush(self._held, (not_before, next(self._seq), time.monotonic(), message))
                    self.max_held = max(self.max_held, len(self._held))
                    continue
            ready.append(message)
        return ready

    def _not_before(self, message: InboundMessage, now: float) -> float:
        value = _float(message.headers.get(NOT_BEFORE_HEADER))
        if value is None:
            return now
        return min(value, now + HARD_MAX_DELAY)

    def _requeue_overheld(self) -> None:
        """Put messages held for too long back at the tail of the retry queue (Redis only)."""
        if self._hold_limit is None or not self._held:
            return
        limit = time.monotonic() - self._hold_limit
        keep = []
        for entry in self._held:
            if entry[2] < limit:
                message = entry[3]
                self.publisher.publish_message("", self.retry_queue, message.body, dict(message.headers))
                message.handle.ack()
            else:
                keep.append(entry)
        if len(keep) != len(self._held):
            heapq.heapify(keep)
            self._held = keep

    # -- settling --------------------------------------------------------------------------------

    def ack(self, messages: list[InboundMessage], whole_batch: bool) -> None:
        for message in messages:
            message.handle.ack()

    def publish_retry(self, message: InboundMessage, outcome: Outcome) -> None:
        assert outcome.payload is not None
        headers = failure_headers(message, outcome)
        headers[DELAY_HEADER] = max(int(round(outcome.delay * 1000)), 0)
        headers[NOT_BEFORE_HEADER] = time.time() + outcome.delay
        self.publisher.publish_message("", self.retry_queue, retry_body(outcome.payload), headers)

    def publish_dead_letter(self, message: InboundMessage, outcome: Outcome, minimal: bool = False) -> None:
        ttl = dead_letter_ttl()
        headers = minimal_failure_headers(outcome) if minimal else failure_headers(message, outcome)
        if ttl:
            headers[DEAD_UNTIL_HEADER] = time.time() + ttl
        self.publisher.publish_message(
            "", self.dead_letter_queue, message.body, headers, expiration=float(ttl) if ttl else None
        )


__all__ = ["KombuConsumer"]
