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
``mandatory``; a publish that is not confirmed is retried and then raises ``PublishFailed``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pika
import pika.exceptions

from dj_cqrs import encoding
from dj_cqrs.conf import cqrs_settings
from dj_cqrs.core.messages import ConsumeHandler
from dj_cqrs.core.names import routing_key_for
from dj_cqrs.core.payload import TransportPayload
from dj_cqrs.exceptions import PublishFailed
from dj_cqrs.log import payload_context
from dj_cqrs.transport.base import BaseTransport, every_instance
from dj_cqrs.transport.rabbit_connection import (
    CONNECTION_ERRORS,
    connection_parameters,
    message_properties,
)
from dj_cqrs.transport.rabbit_consumer import RabbitMQConsumer
from dj_cqrs.transport.rabbit_dead_letters import RabbitDeadLetterStore
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
        self.last_used = 0.0
        self.exchange: str | None = None
        self._next_tag = 0
        self._outstanding: set[int] = set()
        self._nacked: set[int] = set()
        self._returned = 0
        self._select_ok = False
        self._channel_closed: BaseException | None = None

    def usable(self) -> bool:
        return (
            self.pid == os.getpid()
            and self.connection is not None
            and self.connection.is_open
            and self.channel is not None
            and self.channel.is_open
        )

    def open(self) -> BlockingChannel:
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
        self.connection = pika.BlockingConnection(connection_parameters("producer"))
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
                raise pika.exceptions.AMQPChannelError(f"channel closed: {self._channel_closed!r}")
            if time.monotonic() > deadline:
                raise pika.exceptions.AMQPError("no Confirm.SelectOk from the broker")
            self.connection.process_data_events(time_limit=0.001)
        self.channel = channel
        self.exchange = exchange
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

    def publish(
        self, messages: list[tuple[str, str, bytes, dict[str, Any] | None, str | None]]
    ) -> list[int]:
        """Publish and wait for the confirms; return the indexes the broker did not confirm."""
        channel = self.open()
        assert self.connection is not None
        impl = channel._impl
        tags: dict[int, int] = {}
        for index, (exchange, rk, body, headers, expiration) in enumerate(messages):
            impl.basic_publish(exchange, rk, body, message_properties(headers, expiration), mandatory=True)
            self._next_tag += 1
            self._outstanding.add(self._next_tag)
            tags[self._next_tag] = index
        deadline = time.monotonic() + cqrs_settings.master.confirm_timeout
        while self._outstanding & tags.keys():
            if self._channel_closed is not None:
                raise pika.exceptions.AMQPChannelError(f"channel closed before the confirms: {self._channel_closed!r}")
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
        # What pika itself does on a heartbeat timeout: terminate the stream, no Connection.Close.
        terminate = getattr(getattr(connection, "_impl", None), "_terminate_stream", None)
        if terminate is None:  # not pika's usual adapter: fall back to the clean close
            self.connection = connection
            self.close()
            return
        try:
            if connection.is_open:
                terminate(pika.exceptions.StreamLostError("dropped by dj_cqrs after a failed publish"))
                # pika completes the abort in its I/O loop: a few turns, no network round trip.
                for _ in range(_ABORT_TURNS):
                    if connection.is_closed:
                        break
                    connection.process_data_events(0)
        except Exception:  # noqa: BLE001 - pika reports the abort as StreamLostError: expected
            pass


class RabbitMQTransport(BaseTransport):
    """RabbitMQ through pika; see the module docstring."""

    connection_errors = CONNECTION_ERRORS
    supports_confirms = True
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
    def produce(self, payload: TransportPayload) -> None:
        """Publish one payload (also callable on the class, as in django-cqrs: it then publishes
        through this process's ``RabbitMQTransport``)."""
        self.produce_many([payload])

    def produce_many(self, payloads: Iterable[TransportPayload]) -> None:
        items = [
            (routing_key_for(p), encoding.dumps_bytes(p.to_dict(), allow_nan=True), p) for p in payloads
        ]
        self.publish_confirmed(
            [(cqrs_settings.exchange, rk, body, None, None) for rk, body, _ in items], payloads=[p for *_, p in items]
        )

    def publish_confirmed(
        self,
        messages: list[tuple[str, str, bytes, dict[str, Any] | None, str | None]],
        payloads: list[TransportPayload] | None = None,
    ) -> None:
        """Publish ``(exchange, routing_key, body, headers, expiration)`` tuples with confirms.

        What the broker did not confirm (nack, lost connection, confirm timeout) is published
        again on a fresh connection, ``master.publish_retries`` times; then ``PublishFailed``.
        A message may therefore arrive twice, which replicas ignore (same revision).
        """
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
                    failed = producer.publish([messages[i] for i in chunk])
                    failed_positions = set(failed)
                    confirmed = [i for pos, i in enumerate(chunk) if pos not in failed_positions]
                    for i in confirmed:
                        self._log_published(payloads, i, messages[i][1])
                    chunk = [chunk[pos] for pos in failed]
                    if not chunk:
                        break
                    error: BaseException = pika.exceptions.NackError([])
                except CONNECTION_ERRORS as exc:
                    if isinstance(exc, pika.exceptions.AMQPChannelError):
                        producer.close()  # only the channel failed: the connection closes cleanly
                    else:
                        producer.abort()
                    error = exc
                attempt += 1
                if attempt > retries:
                    extra = payload_context(payloads[chunk[0]]) if payloads else None
                    logger.error(
                        "CQRS publish of %s message(s) failed after %s attempts: %r",
                        len(chunk),
                        attempt,
                        error,
                        extra=extra,
                    )
                    raise PublishFailed(
                        f"{len(chunk)} message(s) not confirmed by RabbitMQ after {attempt} attempts: {error!r}"
                    ) from error
                logger.warning("CQRS publish attempt %s failed (%r); retrying", attempt, error)
                time.sleep(delay * attempt)

    def _log_published(self, payloads: list[TransportPayload] | None, index: int, rk: str) -> None:
        if payloads and logger.isEnabledFor(logging.INFO):
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
    def consume(self, cqrs_ids: list[str] | None = None, handler: ConsumeHandler | None = None, **kwargs: Any) -> None:
        """Run the consume loop (see :mod:`dj_cqrs.transport.rabbit_consumer`) with ``handler``
        (default: the replica's, :func:`dj_cqrs.core.handlers.default_handler`)."""
        RabbitMQConsumer(cqrs_ids=cqrs_ids, handler=handler, **kwargs).run()


__all__ = ["RabbitMQTransport"]
