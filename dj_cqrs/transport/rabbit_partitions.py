"""The RabbitMQ consume loop of a partitioned replica service (``replica.partitions = N``).

The topology is in :mod:`dj_cqrs.transport.rabbit_topology`. Every worker of every
``cqrs_consume`` process subscribes to every partition queue ``<queue>.p<i>``, each on its own
channel; the queues have a *single active consumer*, so one worker at a time gets a partition's
messages, in order, and when it dies (its connection closes) the broker hands the partition, with
what the worker left unacknowledged, to the next subscriber, in the original order.

**Balancing.** RabbitMQ gives a partition to its oldest subscriber: the first worker started would
keep them all. So every :data:`BALANCE_SECONDS` a worker counts the subscribers of a partition
queue (``consumer_count`` of a passive declare: every worker subscribes once per queue) and the
partitions it received messages from lately; above its fair share ``ceil(N / workers)`` it
*releases* the surplus: between two batches (everything taken is settled and committed), it
closes the channel of that partition (the broker requeues what was prefetched, in its original
order, and activates the next subscriber: see :meth:`PartitionedRabbitMQConsumer._close_keeping_order`)
and subscribes again, at the end of the line. Starting
a worker therefore takes load off the busy ones within seconds, without any coordination but the
broker's.

**Settling.** Each channel is transactional (AMQP ``tx``), as in
:class:`~dj_cqrs.transport.rabbit_consumer.RabbitMQConsumer`: a retry or dead letter is
published on the channel of the message it replaces, with its acknowledgement, in one commit.
A retry waits in ``<queue>.p<i>.retry.<ms>``, which dead-letters back into its own partition
``<queue>.p<i>``: a retried message keeps its partition (and its key's later messages go on
meanwhile, as on an unpartitioned queue: the revision guard keeps the newest state).
"""

from __future__ import annotations

import logging
import math
import time
from functools import partial
from typing import TYPE_CHECKING, Any

import pika.exceptions

from dj_cqrs.core.messages import InboundMessage, Outcome
from dj_cqrs.core.names import DELAY_HEADER, binding_keys, delay_of_queue, delay_queue_name
from dj_cqrs.core.settlement import failure_headers, retry_body
from dj_cqrs.exceptions import ConnectionFailed
from dj_cqrs.transport import pika_logging
from dj_cqrs.transport.rabbit_connection import open_blocking_connection
from dj_cqrs.transport.rabbit_consumer import (
    RETRY_QUEUE_REDECLARE_SECONDS,
    RabbitMQConsumer,
    retry_queue_arguments,
)
from dj_cqrs.transport.rabbit_topology import (
    consumed_queues,
    queue_type_arguments,
    refusals_translated,
    replica_queue_arguments,
)

if TYPE_CHECKING:
    from pika.adapters.blocking_connection import BlockingChannel

logger = logging.getLogger("django-cqrs.transport.rabbitmq")

#: How often a worker compares the partitions it serves with its fair share.
BALANCE_SECONDS = 1.0
#: A partition that delivered within this many seconds counts as one the worker serves.
ACTIVE_WINDOW_SECONDS = 2.0
_RETURN_ATTEMPTS = 3
#: How long closing a released partition's channel may take.
CLOSE_TIMEOUT_SECONDS = 10.0


class PartitionedRabbitMQConsumer(RabbitMQConsumer):
    """Consumes every partition queue, one transactional channel each; see the module docstring.

    A message's handle is ``(partition queue, delivery tag)``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queues: list[str] = consumed_queues(self.queue)
        self.channels: dict[str, BlockingChannel] = {}
        #: When each partition last delivered a message to this worker (monotonic seconds).
        self.last_delivery: dict[str, float] = {}
        #: Partitions released so far (balancing), for logs and tests.
        self.released = 0
        self._next_balance = 0.0
        self._control: BlockingChannel | None = None
        self._retry_declared: dict[tuple[str, int], float] = {}
        self._uncommitted_on: dict[str, int] = {}
        self._unsettled_on: set[str] = set()
        self._returned_on: dict[str, list[tuple[str, Any, bytes]]] = {}

    # -- connection ------------------------------------------------------------------------------

    def open(self) -> None:
        self._buffer = []
        self._retry_declared = {}
        self._uncommitted_on = {}
        self._unsettled_on = set()
        self._returned_on = {}
        self.channels = {}
        self.last_delivery = {}
        self.connection = open_blocking_connection("consumer", self.nodes)
        control = self.connection.channel()
        self.declare_topology(control)
        self._control = control
        self.channel = control
        for name in self.queues:
            self._subscribe(name)
        self.drain_unpartitioned_queue()
        self._next_balance = time.monotonic() + BALANCE_SECONDS
        logger.info(
            "CQRS consumer connected: partitions=%s (%s ... %s) cqrs_ids=%s prefetch=%s per partition",
            len(self.queues),
            self.queues[0],
            self.queues[-1],
            self.cqrs_ids,
            self.prefetch,
        )

    def drain_unpartitioned_queue(self) -> None:
        """The queue ``<queue>`` of the unpartitioned topology, when it still exists (partitions
        were just turned on): unbind it from the exchange, so that it stops filling up with
        messages nobody would read, and consume what it holds like a partition (without a single
        active consumer: its backlog is applied in parallel, the revision guard keeps the newest
        state). Delete it once it is empty (docs/scaling.md)."""
        assert self.connection is not None and self._control is not None
        probe = self.connection.channel()
        try:
            # A 404 is the usual answer: pika's WARNING about the closed channel is not logged.
            with pika_logging.reported_by_us():
                depth = int(probe.queue_declare(self.queue, passive=True).method.message_count)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:
                return  # the usual case: no such queue
            raise
        finally:
            if probe.is_open:
                probe.close()
        for key in [
            k for cqrs_id in self.cqrs_ids for k in binding_keys(self.queue, cqrs_id)
        ] + self.route_binding_keys:
            self._control.queue_unbind(self.queue, self.exchange, routing_key=key)
        self._subscribe(self.queue)
        logger.warning(
            "CQRS queue %r of the unpartitioned topology still exists (%s message(s)): it is unbound from %r"
            " and drained by the partitioned consumers; delete it once it is empty (see docs/scaling.md)",
            self.queue,
            depth,
            self.exchange,
        )

    def _subscribe(self, name: str) -> None:
        assert self.connection is not None
        channel = self.connection.channel()
        channel.basic_qos(prefetch_count=self.prefetch)
        channel.add_on_return_callback(partial(self._on_partition_return, name))
        channel.tx_select()
        channel.basic_consume(name, partial(self._on_partition_message, name), auto_ack=False)
        self.channels[name] = channel

    def close(self, error: BaseException | None = None) -> None:
        channels, self.channels = self.channels, {}
        self._control = None
        if error is None and self.connection is not None and self.connection.is_open:
            # A clean stop: hand the partitions over without the reorder window (see below).
            for channel in channels.values():
                try:
                    self._close_keeping_order(channel)
                except Exception:  # noqa: BLE001 - the connection is closed right after anyway
                    break
        super().close(error)

    def _close_keeping_order(self, channel: BlockingChannel) -> None:
        """Close a partition's channel so that the next subscriber gets what this worker did not
        acknowledge *first*, in its original order.

        pika cancels a channel's consumers (``basic.cancel``) before it closes it. On a queue with
        a single active consumer the cancel alone makes the next subscriber active, and RabbitMQ
        delivers it the queue's next messages while the ones this worker prefetched are still
        unacknowledged here; they are requeued only when the close follows, behind later messages
        of the same keys. A ``channel.close`` without the cancel is handled by the queue in one
        step (requeue what the channel held, then activate the next consumer), as when a worker
        dies. So the consumers are marked cancelled for pika, and only the close is sent."""
        impl = channel._impl  # pika's asynchronous channel under the blocking adapter
        if not impl.is_open:
            return
        impl._cancelled.update(impl._consumers)
        impl.close()
        assert self.connection is not None
        deadline = time.monotonic() + CLOSE_TIMEOUT_SECONDS
        while not impl.is_closed:
            if time.monotonic() > deadline:
                raise ConnectionFailed("a partition channel did not close in time")
            self.connection.process_data_events(time_limit=0.05)

    # -- delivery --------------------------------------------------------------------------------

    def _on_partition_message(
        self, name: str, channel: Any, method: Any, properties: Any, body: bytes
    ) -> None:
        self.last_delivery[name] = time.monotonic()
        self._buffer.append(
            InboundMessage(
                body=body,
                routing_key=method.routing_key or "",
                headers=dict(properties.headers or {}),
                handle=(name, method.delivery_tag),
            )
        )

    def _on_partition_return(
        self, name: str, channel: Any, method: Any, properties: Any, body: bytes
    ) -> None:
        self._returned_on.setdefault(name, []).append((method.routing_key, properties, body))

    def poll(self, timeout: float) -> None:
        # Between batches: everything taken so far is settled and committed.
        if time.monotonic() >= self._next_balance:
            self.balance()
        super().poll(timeout)

    # -- balancing -------------------------------------------------------------------------------

    def served(self) -> list[str]:
        """The partitions that delivered to this worker within :data:`ACTIVE_WINDOW_SECONDS`."""
        since = time.monotonic() - ACTIVE_WINDOW_SECONDS
        return [name for name in self.queues if self.last_delivery.get(name, -math.inf) >= since]

    def balance(self) -> None:
        """Release the partitions above this worker's fair share (see the module docstring)."""
        self._next_balance = time.monotonic() + BALANCE_SECONDS
        if len(self.queues) < 2 or self._control is None:
            return
        workers = int(
            self._control.queue_declare(self.queues[0], passive=True).method.consumer_count
        )
        if workers < 2:
            return
        share = math.ceil(len(self.queues) / workers)
        served = self.served()
        surplus = len(served) - share
        if surplus <= 0:
            return
        # The ones that delivered least recently go first: the busiest stay where they are warm.
        for name in sorted(served, key=lambda n: self.last_delivery[n])[:surplus]:
            self.release(name)
        logger.info(
            "CQRS consumer released %s partition(s) to other workers: %s workers, share %s, served %s",
            surplus,
            workers,
            share,
            len(served),
        )

    def release(self, name: str) -> None:
        """Give partition ``name`` to the next subscriber and subscribe again at the end of the
        line. Its messages still in the buffer are dropped here: closing the channel requeues
        them (unacknowledged) in their original order."""
        channel = self.channels.pop(name)
        self._uncommitted_on.pop(name, None)
        self._unsettled_on.discard(name)
        self.last_delivery.pop(name, None)
        self._close_keeping_order(channel)
        self._buffer = [m for m in self._buffer if m.handle[0] != name]
        self.released += 1
        self._subscribe(name)

    # -- settling --------------------------------------------------------------------------------

    def _channel_of(self, message: InboundMessage) -> tuple[str, BlockingChannel]:
        name = message.handle[0]
        channel = self.channels.get(name)
        if channel is None:  # released meanwhile: cannot happen between a take and its commit
            raise ConnectionFailed(f"the channel of partition {name!r} is gone")
        return name, channel

    def ack(self, messages: list[InboundMessage], whole_batch: bool) -> None:
        """Acknowledge on each message's channel, in the channel's transaction."""
        by_queue: dict[str, list[int]] = {}
        for message in messages:
            by_queue.setdefault(message.handle[0], []).append(message.handle[1])
        for name, tags in by_queue.items():
            channel = self.channels.get(name)
            if channel is None:
                raise ConnectionFailed(f"the channel of partition {name!r} is gone")
            # One ``multiple`` ack when the tags are consecutive from the last ack on: no earlier
            # delivery of this channel may be left unacknowledged (e.g. a requeued one).
            if whole_batch and name not in self._unsettled_on:
                channel.basic_ack(delivery_tag=max(tags), multiple=True)
            else:
                for tag in tags:
                    channel.basic_ack(delivery_tag=tag)
                self._unsettled_on.add(name)
            self._uncommitted_on[name] = self._uncommitted_on.get(name, 0) + len(tags)
        self._uncommitted += len(messages)

    def commit(self) -> None:
        """Commit every channel with pending publishes or acknowledgements."""
        if not self._uncommitted_on:
            return
        assert self.connection is not None
        pending, self._uncommitted_on = self._uncommitted_on, {}
        for name in pending:
            self.channels[name].tx_commit()
        self._uncommitted = 0
        self.connection.process_data_events(0)  # basic.return frames come before tx.commit-ok
        attempts = 0
        while self._returned_on:
            attempts += 1
            returned, self._returned_on = self._returned_on, {}
            for name, messages in returned.items():
                channel = self.channels[name]
                for routing_key, properties, body in messages:
                    logger.error(
                        "CQRS re-publish to %r was returned as unroutable (queue deleted?); declaring it"
                        " again and re-publishing (attempt %s)",
                        routing_key,
                        attempts,
                    )
                    self._redeclare_on(channel, routing_key)
                    channel.basic_publish(
                        "", routing_key, body, properties=properties, mandatory=True
                    )
                channel.tx_commit()
            self.connection.process_data_events(0)
            if attempts >= _RETURN_ATTEMPTS and self._returned_on:
                raise ConnectionFailed("a re-publish keeps being returned as unroutable")

    def _redeclare_on(self, channel: BlockingChannel, name: str) -> None:
        for partition in [*self.queues, self.queue]:
            delay_ms = delay_of_queue(partition, name)
            if delay_ms is not None:
                self._declare_partition_retry_queue(channel, partition, delay_ms)
                return
        if name == self.dead_letter_queue:
            channel.queue_declare(name, durable=True, arguments=queue_type_arguments() or None)
        elif name == self.queue:  # the unpartitioned queue being drained: left as it was
            channel.queue_declare(name, passive=True)
        else:
            channel.queue_declare(
                name, durable=True, arguments=replica_queue_arguments(self.dead_letter_queue, True)
            )

    def _publish_on(
        self,
        message: InboundMessage,
        routing_key: str,
        body: bytes,
        headers: dict[str, Any],
        expiration: str | None = None,
    ) -> None:
        """Publish into ``routing_key`` (a queue) on the channel of ``message``, in its transaction."""
        _name, channel = self._channel_of(message)
        saved = self.channel
        self.channel = (
            channel  # the base class's publish (with its header fallback) on this channel
        )
        try:
            self._publish(routing_key, body, headers, expiration)
        finally:
            self.channel = saved

    def publish_retry(self, message: InboundMessage, outcome: Outcome) -> None:
        assert outcome.payload is not None
        name, channel = self._channel_of(message)
        delay_ms = max(int(round(outcome.delay * 1000)), 0)
        headers = failure_headers(message, outcome)
        headers[DELAY_HEADER] = delay_ms
        body = retry_body(outcome.payload)
        if delay_ms == 0:
            self._publish_on(message, name, body, headers)
            return
        declared = self._retry_declared.get((name, delay_ms))
        if declared is None or time.monotonic() - declared > RETRY_QUEUE_REDECLARE_SECONDS:
            self._declare_partition_retry_queue(channel, name, delay_ms)
        self._publish_on(message, delay_queue_name(name, delay_ms), body, headers)

    def _declare_partition_retry_queue(
        self, channel: BlockingChannel, partition: str, delay_ms: int
    ) -> None:
        """``<queue>.p<i>.retry.<delay_ms>``, dead-lettering back into ``<queue>.p<i>``."""
        with refusals_translated():
            channel.queue_declare(
                delay_queue_name(partition, delay_ms),
                durable=True,
                arguments=retry_queue_arguments(partition, delay_ms),
            )
        self._retry_declared[(partition, delay_ms)] = time.monotonic()

    def publish_dead_letter(
        self, message: InboundMessage, outcome: Outcome, minimal: bool = False
    ) -> None:
        _name, channel = self._channel_of(message)
        saved = self.channel
        self.channel = channel
        try:
            super().publish_dead_letter(message, outcome, minimal)
        finally:
            self.channel = saved


__all__ = ["ACTIVE_WINDOW_SECONDS", "BALANCE_SECONDS", "PartitionedRabbitMQConsumer"]
