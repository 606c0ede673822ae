"""RabbitMQ transport (pika), wire-compatible with django-cqrs.

Topology (django-cqrs's, see docs/wire-format.md): a durable topic exchange ``CQRS['exchange']``;
each replica service a durable queue ``CQRS['queue']`` bound with ``<cqrs_id>`` (broadcast) and
``cqrs.<queue>.<cqrs_id>`` (direct sync), and a dead-letter queue bound with
``cqrs.<dead_letter_queue>.<cqrs_id>``. Retries wait in per-delay queues
``<queue>.retry.<milliseconds>`` (a TTL that dead-letters back into the replica queue), so a
message waiting for its retry survives a worker crash. The consumer lives in
:mod:`dj_cqrs.transport.rabbit_consumer`, the dead-letter tools in
:mod:`dj_cqrs.transport.rabbit_dead_letters`, connecting and declaring the topology in
:mod:`dj_cqrs.transport.rabbit_connection`.

Publishing uses one connection per thread (re-created after a fork), publisher confirms and
``mandatory``; a publish that is not confirmed is retried and then raises ``PublishFailed``. A
batch is written to the socket at once and its confirms are awaited once. A refusal of the
credentials or permissions raises ``BrokerRefused`` at once (never retried), and
``produce_many(..., fail_fast=True)`` makes one attempt without sleeping.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import struct
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pika
import pika.exceptions

from dj_cqrs import encoding
from dj_cqrs.conf import cqrs_settings
from dj_cqrs.core.event import AnyPayload, EventPayload
from dj_cqrs.core.messages import ConsumeHandler
from dj_cqrs.core.names import (
    PARTITION_HEADER,
    event_partition_key,
    partition_key,
    routing_key_for,
)
from dj_cqrs.exceptions import BrokerRefused, PublishFailed
from dj_cqrs.log import payload_context
from dj_cqrs.tracing import headers_of
from dj_cqrs.transport import pika_logging
from dj_cqrs.transport.base import BaseTransport, every_instance
from dj_cqrs.transport.rabbit_connection import (
    CONNECTION_ERRORS,
    display_url,
    message_properties,
    refusal_reason,
    refused,
)
from dj_cqrs.transport.rabbit_consumer import RabbitMQConsumer
from dj_cqrs.transport.rabbit_dead_letters import RabbitDeadLetterStore
from dj_cqrs.transport.rabbit_nodes import BrokerNodes
from dj_cqrs.transport.rabbit_partitions import PartitionedRabbitMQConsumer
from dj_cqrs.transport.resolution import through_instance

if TYPE_CHECKING:
    from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

logger = logging.getLogger("django-cqrs.transport.rabbitmq")

#: After this much idleness the connection is polled before a publish, so that one the broker
#: dropped meanwhile (missed heartbeats: pika services them only inside its calls) is replaced
#: up front instead of failing the publish attempt. Heartbeats can be as short as 1 s.
_IDLE_CHECK_SECONDS = 1.0
_PUBLISH_CHUNK = 1000
_ABORT_TURNS = 10
#: Bytes of marshalled frames handed to the socket at once while a batch is written.
_WRITE_CHUNK = 256 * 1024

Message = tuple[str, str, bytes, "dict[str, Any] | None", "str | None"]

_FRAME_END = b"\xce"
_METHOD_FRAME = struct.Struct(">BHI")
_PUBLISH_PREFIX = struct.Struct(">HHH").pack(60, 40, 0)  # Basic.Publish, ticket 0
_HEADER = struct.Struct(">BHIHHQ")  # frame type, channel, size, class 60, weight 0, body size
_MANDATORY = b"\x01"
_PROPERTY_FLAGS = struct.Struct(">H")
_LONG = struct.Struct(">I")


def _short_string(value: str) -> bytes | None:
    raw = value.encode("utf-8")
    return bytes((len(raw),)) + raw if len(raw) <= 255 else None


class _Marshaller:
    """AMQP 0-9-1 frames of ``Basic.Publish`` messages, built without pika's per-frame objects
    (the same bytes pika's ``basic_publish`` writes: a method frame with ``mandatory``, a content
    header frame and body frames of at most ``frame_max - 8`` bytes)."""

    def __init__(self, channel_number: int, body_max: int) -> None:
        self.channel_number = channel_number
        self.body_max = body_max
        self._plain_properties = b"".join(message_properties().encode())
        # Content header properties of a message whose only header is the partition key:
        # ``content_type``, ``headers`` and ``delivery_mode`` (flags 0xB000), built without pika.
        content_type, key_name = _short_string("text/plain"), _short_string(PARTITION_HEADER)
        assert content_type is not None and key_name is not None
        self._key_prefix = _PROPERTY_FLAGS.pack(0xB000) + content_type
        self._key_name = key_name
        self._key_suffix = b"\x02"  # delivery_mode 2
        self._keys: dict[tuple[str, str], bytes] = {}

    def key_properties(self, key: str) -> bytes:
        """The encoded properties of a message whose only header is ``PARTITION_HEADER: key``
        (the bytes ``pika.BasicProperties.encode()`` gives)."""
        raw = key.encode("utf-8")
        entry = self._key_name + b"S" + _LONG.pack(len(raw)) + raw
        return self._key_prefix + _LONG.pack(len(entry)) + entry + self._key_suffix

    def frames(
        self, exchange: str, routing_key: str, body: bytes, properties: bytes | None
    ) -> bytes | None:
        """The frames of one message, or None when pika must build them (a name over 255 bytes:
        pika raises its own error for it)."""
        method = self._keys.get((exchange, routing_key))
        if method is None:
            ex, rk = _short_string(exchange), _short_string(routing_key)
            if ex is None or rk is None:
                return None
            payload = _PUBLISH_PREFIX + ex + rk + _MANDATORY
            method = _METHOD_FRAME.pack(1, self.channel_number, len(payload)) + payload + _FRAME_END
            if len(self._keys) < 10000:
                self._keys[(exchange, routing_key)] = method
        props = self._plain_properties if properties is None else properties
        size = len(body)
        parts = [
            method,
            _HEADER.pack(2, self.channel_number, 12 + len(props), 60, 0, size),
            props,
            _FRAME_END,
        ]
        channel, limit = self.channel_number, self.body_max
        for start in range(0, size, limit):
            chunk = body[start : start + limit]
            parts += (_METHOD_FRAME.pack(3, channel, len(chunk)), chunk, _FRAME_END)
        return b"".join(parts)


@dataclasses.dataclass
class SentBatch:
    """A batch :meth:`RabbitMQTransport.send_batch` wrote, awaiting its confirms."""

    messages: list[Message]
    payloads: list[AnyPayload]
    #: The producer connection's generation the batch was written on (-1: writing failed).
    generation: int
    #: ``{delivery tag: index}`` (empty: writing failed, the whole batch is published again).
    tags: dict[int, int]


class _ThreadProducer:
    """A connection and a confirm-mode channel owned by one thread of one process.

    Confirms are pipelined: a batch is published at once and the broker's ``Basic.Ack``/``Nack``
    frames (``multiple`` included) are matched to delivery tags, so N messages cost about one
    round trip instead of N.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.connection: BlockingConnection | None = None
        self.channel: BlockingChannel | None = None
        #: The broker node(s) and which one this thread's next connection tries first.
        self.nodes = BrokerNodes("producer")
        self.last_used = 0.0
        self.exchange: str | None = None
        self._next_tag = 0
        self._outstanding: set[int] = set()
        self._nacked: set[int] = set()
        self._returned = 0
        self._select_ok = False
        self._channel_closed: BaseException | None = None
        self._marshaller: _Marshaller | None = None
        #: Incremented for every new connection: confirms awaited for an older one never come.
        self.generation = 0

    def usable(self) -> bool:
        return (
            self.pid == os.getpid()
            and self.connection is not None
            and self.connection.is_open
            and self.channel is not None
            and self.channel.is_open
        )

    def open(self, fail_fast: bool = False) -> BlockingChannel:
        if self.usable():
            assert self.connection is not None and self.channel is not None
            if time.monotonic() - self.last_used > _IDLE_CHECK_SECONDS:
                # Service heartbeats and notice a connection the broker closed while we idled.
                try:
                    self.connection.process_data_events(0)
                except CONNECTION_ERRORS:
                    self.abort()
            if self.usable():
                return self.channel
        self.close()
        self.pid = os.getpid()
        # fail_fast: the caller wants an answer now, not pika's retries (each node tried once).
        self.connection = self.nodes.connect(attempts=1 if fail_fast else None)
        self.generation += 1
        channel = self.connection.channel()
        exchange = cqrs_settings.exchange
        channel.exchange_declare(exchange=exchange, exchange_type="topic", durable=True)
        self._next_tag = 0
        self._outstanding = set()
        self._nacked = set()
        self._select_ok = False
        self._channel_closed = None
        impl = channel._impl  # the asynchronous channel under pika's blocking adapter
        impl.add_on_return_callback(self._on_return)
        impl.add_on_close_callback(self._on_channel_close)
        impl.confirm_delivery(self._on_confirm, callback=self._on_select_ok)
        deadline = time.monotonic() + cqrs_settings.master.confirm_timeout
        while not self._select_ok:
            if self._channel_closed is not None:
                raise pika.exceptions.AMQPChannelError(
                    f"channel closed: {self._channel_closed!r}"
                ) from self._channel_closed
            if time.monotonic() > deadline:
                raise pika.exceptions.AMQPError("no Confirm.SelectOk from the broker")
            self.connection.process_data_events(time_limit=0.001)
        self.channel = channel
        self.exchange = exchange
        self._marshaller = _Marshaller(impl.channel_number, impl.connection._body_max_length)
        return channel

    def _on_select_ok(self, frame: Any) -> None:
        self._select_ok = True

    def _on_channel_close(self, channel: Any, reason: BaseException) -> None:
        # e.g. 404 when the exchange was deleted: no confirm will ever come on this channel.
        self._channel_closed = reason

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        tag = method.delivery_tag
        if method.multiple:
            done = {t for t in self._outstanding if t <= tag}
        else:
            done = {tag} & self._outstanding
        self._outstanding -= done
        if type(method).__name__ == "Nack":
            self._nacked |= done

    def _on_return(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        self._returned += 1
        logger.warning(
            "CQRS message is unroutable (no queue is bound to %r on exchange %r): no replica has"
            " declared its queue for it yet",
            method.routing_key,
            method.exchange,
        )

    def publish(self, messages: list[Message], fail_fast: bool = False) -> list[int]:
        """Publish and wait for the confirms; return the indexes the broker did not confirm."""
        generation, tags = self.write(messages, fail_fast)
        return self.wait(generation, tags)

    def write(self, messages: list[Message], fail_fast: bool = False) -> tuple[int, dict[int, int]]:
        """Write a batch (its frames handed to the socket in large chunks) without waiting for
        the confirms; return the connection's generation and ``{delivery tag: index}``."""
        channel = self.open(fail_fast)
        assert self.connection is not None and self._marshaller is not None
        impl = channel._impl
        connection_impl = impl.connection
        marshaller = self._marshaller
        tags: dict[int, int] = {}
        buffered: list[bytes] = []
        size = 0
        if not impl.is_open:
            raise pika.exceptions.ChannelWrongStateError("Channel is closed.")
        for index, (exchange, rk, body, headers, expiration) in enumerate(messages):
            props = None
            if headers and expiration is None and len(headers) == 1 and PARTITION_HEADER in headers:
                props = marshaller.key_properties(headers[PARTITION_HEADER])
            elif headers or expiration is not None:
                props = b"".join(message_properties(headers, expiration).encode())
            frames = marshaller.frames(exchange, rk, body, props)
            if frames is None:  # let pika build it (and raise for a name it cannot encode)
                if buffered:
                    connection_impl._output_marshaled_frames([b"".join(buffered)])
                    buffered, size = [], 0
                impl.basic_publish(
                    exchange, rk, body, message_properties(headers, expiration), mandatory=True
                )
            else:
                buffered.append(frames)
                size += len(frames)
                if size >= _WRITE_CHUNK:
                    connection_impl._output_marshaled_frames([b"".join(buffered)])
                    buffered, size = [], 0
            self._next_tag += 1
            self._outstanding.add(self._next_tag)
            tags[self._next_tag] = index
        if buffered:
            connection_impl._output_marshaled_frames([b"".join(buffered)])
        self.connection.process_data_events(0)  # onto the socket now, not at the next wait
        return self.generation, tags

    def wait(self, generation: int, tags: dict[int, int]) -> list[int]:
        """Wait for the confirms of a batch :meth:`write` returned ``tags`` for; return the
        indexes the broker did not confirm (nacked)."""
        if generation != self.generation or not self.usable():
            raise pika.exceptions.AMQPConnectionError(
                "the connection was replaced before the confirms came"
            )
        assert self.connection is not None
        deadline = time.monotonic() + cqrs_settings.master.confirm_timeout
        while self._outstanding & tags.keys():
            if self._channel_closed is not None:
                raise pika.exceptions.AMQPChannelError(
                    f"channel closed before the confirms: {self._channel_closed!r}"
                ) from self._channel_closed
            if time.monotonic() > deadline:
                raise pika.exceptions.AMQPError(
                    f"{len(self._outstanding & tags.keys())} publish confirm(s) missing after"
                    f" {cqrs_settings.master.confirm_timeout}s"
                )
            self.connection.process_data_events(time_limit=0.001)
        self.last_used = time.monotonic()
        failed = sorted(tags[t] for t in self._nacked & tags.keys())
        self._nacked -= tags.keys()
        return failed

    def close(self) -> None:
        """Close the connection cleanly (AMQP ``Connection.Close``, one round trip)."""
        connection, self.connection, self.channel = self.connection, None, None
        self._outstanding = set()
        if connection is not None and self.pid == os.getpid():
            try:
                if connection.is_open:
                    connection.close()
            except Exception:  # noqa: BLE001 - the connection is being discarded anyway
                pass

    def abort(self) -> None:
        """Drop a connection that failed: close its socket without the AMQP close handshake.

        A clean close waits for the broker's ``Close-Ok`` with no time limit, so on a stalled
        link it would hold the committing thread long after ``confirm_timeout`` has expired.
        """
        connection, self.connection, self.channel = self.connection, None, None
        self._outstanding = set()
        if connection is None or self.pid != os.getpid():
            return
        self.nodes.lost()  # a cluster's next connection starts with another node
        # What pika itself does on a heartbeat timeout: terminate the stream, no Connection.Close.
        terminate = getattr(getattr(connection, "_impl", None), "_terminate_stream", None)
        if terminate is None:  # not pika's usual adapter: fall back to the clean close
            self.connection = connection
            self.close()
            return
        try:
            if connection.is_open:
                terminate(
                    pika.exceptions.StreamLostError("dropped by dj_cqrs after a failed publish")
                )
                # pika completes the abort in its I/O loop: a few turns, no network round trip.
                for _ in range(_ABORT_TURNS):
                    if connection.is_closed:
                        break
                    connection.process_data_events(0)
        except Exception:  # noqa: BLE001 - pika reports the abort as StreamLostError: expected
            pass


def _headers(payload: AnyPayload) -> dict[str, Any]:
    """The AMQP headers of an event: the partition key (``<cqrs_id>:<pk>``; a domain event's
    ``dj_cqrs.event:<key>``, whatever its name), which a partitioned replica hashes on
    (docs/scaling.md), and the trace context, if any."""
    if isinstance(payload, EventPayload):
        key = event_partition_key(payload.key)
    else:
        key = partition_key(payload.cqrs_id, payload.pk)
    trace = headers_of(payload)
    if trace:
        return {**trace, PARTITION_HEADER: key}
    return {PARTITION_HEADER: key}


class RabbitMQTransport(BaseTransport):
    """RabbitMQ through pika; see the module docstring."""

    connection_errors = CONNECTION_ERRORS
    supports_confirms = True
    supports_fail_fast = True
    supports_dead_letters = True
    background_publish = True

    def __init__(self) -> None:
        self._local = threading.local()

    # -- producing -------------------------------------------------------------------------------

    def _producer(self) -> _ThreadProducer:
        producer: _ThreadProducer | None = getattr(self._local, "producer", None)
        if producer is None or producer.pid != os.getpid():
            producer = _ThreadProducer()
            self._local.producer = producer
        return producer

    @through_instance
    def produce(self, payload: AnyPayload) -> None:
        """Publish one payload (also callable on the class, as in django-cqrs: it then publishes
        through this process's ``RabbitMQTransport``)."""
        self.produce_many([payload])

    def produce_many(self, payloads: Iterable[AnyPayload], *, fail_fast: bool = False) -> None:
        """Publish payloads with confirms (a batch is written at once and confirmed at once).

        ``fail_fast=True``: one attempt, no retry and no sleep (a connection is tried once), for
        a caller that must not wait for the broker (e.g. a request thread whose events the relay
        publishes later); ``PublishFailed`` at the first failure, logged at DEBUG only (the caller
        reports the outage). A refusal of the credentials or
        permissions raises :class:`~dj_cqrs.exceptions.BrokerRefused` in either mode."""
        payloads = payloads if isinstance(payloads, list) else list(payloads)
        messages = self._messages(payloads)
        self.publish_confirmed(messages, payloads=payloads, retries=0 if fail_fast else None)

    def _messages(self, payloads: list[AnyPayload]) -> list[Message]:
        exchange = cqrs_settings.exchange
        dumps = encoding.dumps_bytes
        return [
            (exchange, routing_key_for(p), dumps(p.to_dict(), allow_nan=True), _headers(p), None)
            for p in payloads
        ]

    def send_batch(self, payloads: list[AnyPayload]) -> SentBatch:
        """Write ``payloads`` to the broker without waiting for the confirms (the relay prepares
        its next batch meanwhile); :meth:`confirm_batch` waits for them. Batches are confirmed
        in the order they were sent. A refusal raises ``BrokerRefused``; any other failure is
        kept for :meth:`confirm_batch`, which publishes the batch again with retries."""
        messages = self._messages(payloads)
        producer = self._producer()
        try:
            generation, tags = producer.write(messages)
        except CONNECTION_ERRORS as exc:
            self._drop(producer, exc)
            return SentBatch(messages, payloads, -1, {})
        return SentBatch(messages, payloads, generation, tags)

    def confirm_batch(self, batch: SentBatch) -> None:
        """Wait for the confirms of a :meth:`send_batch`; what the broker did not confirm (nack,
        lost connection, timeout) is published again as :meth:`publish_confirmed` does (with its
        retries), then ``PublishFailed``."""
        producer = self._producer()
        failed = list(range(len(batch.messages)))
        if batch.tags and batch.generation == producer.generation and producer.usable():
            try:
                failed = producer.wait(batch.generation, batch.tags)
            except CONNECTION_ERRORS as exc:
                self._drop(producer, exc)
                logger.warning(
                    "CQRS publish of %s message(s) not confirmed (%r); retrying", len(failed), exc
                )
        if logger.isEnabledFor(logging.INFO):
            unconfirmed = set(failed)
            for i in range(len(batch.messages)):
                if i not in unconfirmed:
                    self._log_published(batch.payloads, i, batch.messages[i][1])
        if failed:
            self.publish_confirmed(
                [batch.messages[i] for i in failed], payloads=[batch.payloads[i] for i in failed]
            )

    def _drop(self, producer: _ThreadProducer, exc: BaseException) -> None:
        """Discard the producer's connection after ``exc``; raise ``BrokerRefused`` for a refusal."""
        if isinstance(exc, pika.exceptions.AMQPChannelError):
            producer.close()
        else:
            producer.abort()
        reason = refusal_reason(exc)
        if reason is not None:
            raise self._refused(reason, 0, quiet=False) from exc

    def publish_confirmed(
        self,
        messages: list[Message],
        payloads: list[AnyPayload] | None = None,
        *,
        retries: int | None = None,
    ) -> None:
        """Publish ``(exchange, routing_key, body, headers, expiration)`` tuples with confirms.

        What the broker did not confirm (nack, lost connection, confirm timeout) is published
        again on a fresh connection, ``retries`` times (default ``master.publish_retries``; 0:
        one attempt, no sleep, a connection tried once); then ``PublishFailed``. A message may
        therefore arrive twice, which replicas ignore (same revision). An authentication or
        authorisation refusal raises ``BrokerRefused`` at once.
        """
        fail_fast = retries == 0
        if retries is None:
            retries = cqrs_settings.master.publish_retries
        delay = cqrs_settings.master.publish_retry_delay
        producer = self._producer()
        pending = list(range(len(messages)))
        attempt = 0
        for start in range(0, len(pending), _PUBLISH_CHUNK):
            chunk = pending[start : start + _PUBLISH_CHUNK]
            attempt = 0  # every chunk gets all its retries
            while chunk:
                try:
                    # pika logs a failed or lost connection at length; PublishFailed reports it.
                    with pika_logging.reported_by_us():
                        failed = producer.publish([messages[i] for i in chunk], fail_fast)
                    if payloads and logger.isEnabledFor(logging.INFO):
                        failed_positions = set(failed)
                        for pos, i in enumerate(chunk):
                            if pos not in failed_positions:
                                self._log_published(payloads, i, messages[i][1])
                    chunk = [chunk[pos] for pos in failed]
                    if not chunk:
                        break
                    error: BaseException = pika.exceptions.NackError([])
                    # The retry goes out on a fresh channel: a channel whose publishes the broker
                    # nacked may go on nacking (seen on a RabbitMQ 3.10 cluster: a channel opened
                    # while a quorum queue elected a new leader nacked every publish until the
                    # killed node came back; a new channel was confirmed at once).
                    producer.close()
                except CONNECTION_ERRORS as exc:
                    if isinstance(exc, pika.exceptions.AMQPChannelError):
                        producer.close()  # only the channel failed: the connection closes cleanly
                    else:
                        producer.abort()
                    reason = refusal_reason(exc)
                    if reason is not None:
                        raise self._refused(reason, len(messages) - start, quiet=fail_fast) from exc
                    error = exc
                attempt += 1
                if attempt > retries:
                    extra = payload_context(payloads[chunk[0]]) if payloads else None
                    # fail_fast: the caller reports the outage (once), not one line per publish
                    log = logger.debug if fail_fast else logger.error
                    log(
                        "CQRS publish of %s message(s) failed after %s attempt%s: %r",
                        len(chunk),
                        attempt,
                        "" if attempt == 1 else "s",
                        error,
                        extra=extra,
                    )
                    raise PublishFailed(
                        f"{len(chunk)} message(s) not confirmed by RabbitMQ at {display_url()} after"
                        f" {attempt} attempt{'' if attempt == 1 else 's'}: {error!r}"
                    ) from error
                logger.warning("CQRS publish attempt %s failed (%r); retrying", attempt, error)
                time.sleep(delay * attempt)

    def _refused(self, reason: str, count: int, quiet: bool) -> BrokerRefused:
        url = display_url()
        (logger.debug if quiet else logger.error)(
            "CQRS publish of %s message(s) refused by RabbitMQ at %s: %s", count, url, reason
        )
        return refused(reason, url)

    def _log_published(self, payloads: list[AnyPayload], index: int, rk: str) -> None:
        payload = payloads[index]
        logger.info(
            "CQRS is published: pk = %s (%s), correlation_id = %s.",
            payload.pk,
            payload.cqrs_id,
            payload.correlation_id,
            extra=payload_context(payload, cqrs_routing_key=rk),
        )

    @every_instance
    def clean_connection(self, *args: Any, **kwargs: Any) -> None:
        """Close the publishing connection of the calling thread.

        Also callable on the class, as in django-cqrs (``RabbitMQTransport.clean_connection()``
        in a gunicorn ``post_fork`` or celery ``worker_process_init`` hook): it then does so for
        every ``RabbitMQTransport`` of this process. In a child process, a connection inherited
        from the parent is only dropped: no ``Connection.Close`` is sent on the parent's socket.
        """
        producer: _ThreadProducer | None = getattr(self._local, "producer", None)
        if producer is not None:
            producer.close()
            self._local.producer = None

    # -- consuming -------------------------------------------------------------------------------

    def dead_letter_store(self) -> RabbitDeadLetterStore:
        return RabbitDeadLetterStore()

    @through_instance
    def consume(
        self,
        cqrs_ids: list[str] | None = None,
        handler: ConsumeHandler | None = None,
        **kwargs: Any,
    ) -> None:
        """Run the consume loop (see :mod:`dj_cqrs.transport.rabbit_consumer`) with ``handler``
        (default: the replica's, :func:`dj_cqrs.core.handlers.default_handler`)."""
        consumer = (
            PartitionedRabbitMQConsumer if cqrs_settings.replica.partitions else RabbitMQConsumer
        )
        consumer(cqrs_ids=cqrs_ids, handler=handler, **kwargs).run()


__all__ = ["RabbitMQTransport", "SentBatch"]
