"""Kombu transport: any kombu URL (``redis://``, ``amqp://``, ``filesystem://`` ...).

``CQRS['transport_options']`` is passed to kombu's ``Connection(transport_options=...)``, e.g.
``{"data_folder_in": d, "data_folder_out": d, "control_folder": c}`` for ``filesystem://``.

The body is the same JSON as on RabbitMQ, ``meta``, ``expires`` and ``retries`` included. Queue
and routing-key names follow the RabbitMQ transport: the replica queue ``CQRS['queue']`` is bound
with ``<cqrs_id>`` and ``cqrs.<queue>.<cqrs_id>``; dead letters go to ``dead_letter_<queue>``.

Brokers reached through kombu have no per-message delay, so a retry is re-published at once with
an ``x-cqrs-not-before`` header; a worker that receives it early keeps it unacknowledged (so it is
redelivered if the worker dies) and applies it when it is due.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import socket
import threading
import time
from typing import Any, Iterable

import kombu
import kombu.exceptions
from kombu import Connection, Exchange, Producer, Queue, binding

from dj_cqrs import encoding
from dj_cqrs.conf import cqrs_settings
from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.exceptions import PublishFailed
from dj_cqrs.log import payload_context
from dj_cqrs.registry import replica_registry
from dj_cqrs.replica.consumer import ROUTING_KEY_HEADER, Action, InboundMessage, Outcome, handle
from dj_cqrs.replica.lifecycle import Backoff, StopFlag, process_stop
from dj_cqrs.transport.base import BaseTransport
from dj_cqrs.transport.rabbit_consumer import failure_headers

logger = logging.getLogger("django-cqrs.transport.kombu")

NOT_BEFORE_HEADER = "x-cqrs-not-before"


def _url() -> str:
    return cqrs_settings.url or "amqp://localhost"


def _new_connection() -> Connection:
    """A kombu connection for ``CQRS['url']`` with ``CQRS['transport_options']`` (a copy)."""
    url = _url()
    kwargs: dict[str, Any] = {}
    if url.partition("://")[0] == "filesystem":
        # kombu's own filesystem channel can hand a consumer a message file before its body is
        # written (the message is then lost); ours writes each file atomically.
        from dj_cqrs.transport.kombu_filesystem import Transport as FilesystemTransport

        kwargs["transport"] = FilesystemTransport
    return Connection(url, transport_options=dict(cqrs_settings.transport_options or {}), **kwargs)


def _connection_errors(conn: Connection) -> tuple[type[BaseException], ...]:
    return tuple(conn.connection_errors) + tuple(conn.channel_errors) + (
        kombu.exceptions.KombuError,
        ConnectionError,
        socket.error,
    )


def routing_key_for(payload: TransportPayload) -> str:
    if payload.queue:
        return f"cqrs.{payload.queue}.{payload.cqrs_id}"
    return payload.cqrs_id


class KombuTransport(BaseTransport):
    supports_dead_letters = True

    def __init__(self) -> None:
        self._local = threading.local()

    # -- producing -------------------------------------------------------------------------------

    def _connection(self) -> Connection:
        conn: Connection | None = getattr(self._local, "connection", None)
        pid = getattr(self._local, "pid", None)
        if conn is None or pid != os.getpid():
            conn = _new_connection()
            self._local.connection = conn
            self._local.pid = os.getpid()
        return conn

    def exchange(self) -> Exchange:
        return Exchange(cqrs_settings.exchange, type="topic", durable=True)

    def produce(self, payload: TransportPayload) -> None:
        self.produce_many([payload])

    def produce_many(self, payloads: Iterable[TransportPayload]) -> None:
        for payload in payloads:
            self.publish_raw(
                self.exchange(), routing_key_for(payload), encoding.dumps_bytes(payload.to_dict()), None, payload
            )

    def publish_raw(
        self,
        exchange: Exchange | str,
        routing_key: str,
        body: bytes,
        headers: dict[str, Any] | None,
        payload: TransportPayload | None = None,
        declare: list[Any] | None = None,
        expiration: float | None = None,
    ) -> None:
        conn = self._connection()
        retries = cqrs_settings.master.publish_retries
        try:
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
                retry=True,
                retry_policy={"max_retries": retries, "interval_start": 0.2, "interval_step": 0.5},
                expiration=expiration,
            )
        except _connection_errors(conn) as exc:
            self.clean_connection()
            extra = payload_context(payload) if payload is not None else None
            logger.error("CQRS publish failed: %r", exc, extra=extra)
            raise PublishFailed(f"publish with routing key {routing_key!r} failed: {exc!r}") from exc
        if payload is not None:
            logger.info(
                "CQRS is published: pk = %s (%s), correlation_id = %s.",
                payload.pk,
                payload.cqrs_id,
                payload.correlation_id,
                extra=payload_context(payload),
            )

    def clean_connection(self, *args: Any, **kwargs: Any) -> None:
        conn: Connection | None = getattr(self._local, "connection", None)
        self._local.connection = None
        if conn is not None:
            try:
                conn.release()
            except Exception:  # noqa: BLE001 - discarding a broken connection
                pass

    # -- consuming -------------------------------------------------------------------------------

    def queues(self, cqrs_ids: list[str]) -> tuple[Queue, Queue]:
        exchange = self.exchange()
        queue_name = cqrs_settings.queue
        dlq_name = cqrs_settings.dead_letter_queue
        bindings = []
        for cqrs_id in cqrs_ids:
            bindings.append(binding(exchange, routing_key=cqrs_id))
            bindings.append(binding(exchange, routing_key=f"cqrs.{queue_name}.{cqrs_id}"))
        queue = Queue(queue_name, exchange=exchange, bindings=bindings, durable=True)
        dlq_bindings = [binding(exchange, routing_key=f"cqrs.{dlq_name}.{cqrs_id}") for cqrs_id in cqrs_ids]
        dlq = Queue(dlq_name, exchange=exchange, bindings=dlq_bindings or None, routing_key=dlq_name, durable=True)
        return queue, dlq

    def consume(self, cqrs_ids: list[str] | None = None, **kwargs: Any) -> None:
        KombuConsumer(self, cqrs_ids=cqrs_ids, **kwargs).run()


class KombuConsumer:
    def __init__(
        self,
        transport: KombuTransport,
        cqrs_ids: list[str] | None = None,
        stop: StopFlag | None = None,
        max_messages: int | None = None,
        idle_timeout: float | None = None,
    ) -> None:
        self.transport = transport
        self.cqrs_ids = list(cqrs_ids) if cqrs_ids else sorted(replica_registry.models)
        self.stop = stop or process_stop
        self.max_messages = max_messages
        self.idle_timeout = idle_timeout
        self.handled = 0
        self._last_activity = time.monotonic()
        self._buffer: list[tuple[InboundMessage, Any]] = []
        self._held: list[tuple[float, int, InboundMessage, Any]] = []
        self._seq = itertools.count()

    def _should_stop(self) -> bool:
        if self.stop.is_set():
            return True
        if self.max_messages is not None and self.handled >= self.max_messages:
            return True
        return self.idle_timeout is not None and time.monotonic() - self._last_activity > self.idle_timeout

    def run(self) -> None:
        backoff = Backoff(0.5, 30.0)
        while not self._should_stop():
            conn = _new_connection()
            errors = _connection_errors(conn)
            try:
                conn.ensure_connection(max_retries=1)
                queue, dlq = self.transport.queues(self.cqrs_ids)
                channel = conn.channel()
                queue(channel).declare()
                dlq(channel).declare()
                prefetch = max(cqrs_settings.consumer_prefetch_count, cqrs_settings.replica.CQRS_BATCH_SIZE)
                consumer = kombu.Consumer(
                    channel, queues=[queue], callbacks=[self._on_message], accept=None, prefetch_count=prefetch
                )
                self._held = []
                with consumer:
                    backoff.reset()
                    self._loop(conn)
            except errors as exc:
                delay = backoff.next()
                logger.warning("Broker connection lost (%r); reconnecting in %.1fs", exc, delay)
                if self.stop.wait(delay):
                    break
            finally:
                try:
                    conn.release()
                except Exception:  # noqa: BLE001
                    pass

    def _on_message(self, body: Any, message: Any) -> None:
        raw = message.body
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        inbound = InboundMessage(
            body=raw,
            routing_key=(message.delivery_info or {}).get("routing_key", "") or "",
            headers=dict(message.headers or {}),
            handle=message,
        )
        self._buffer.append((inbound, message))

    def _loop(self, conn: Connection) -> None:
        while not self._should_stop():
            try:
                conn.drain_events(timeout=0.05 if (self._buffer or self._held) else 0.5)
            except socket.timeout:
                pass
            now = time.time()
            due = []
            while self._held and self._held[0][0] <= now:
                _, _, inbound, message = heapq.heappop(self._held)
                due.append((inbound, message))
            batch, self._buffer = due + self._buffer, []
            if batch:
                self._last_activity = time.monotonic()
            for inbound, message in batch:
                if self.stop.is_set():
                    return
                not_before = _float(inbound.headers.get(NOT_BEFORE_HEADER))
                if not_before and not_before > time.time():
                    heapq.heappush(self._held, (not_before, next(self._seq), inbound, message))
                    continue
                self._process(inbound, message)

    def _process(self, inbound: InboundMessage, message: Any) -> None:
        outcome = handle(inbound)
        backoff = Backoff(0.5, 30.0)
        while outcome.action is Action.REQUEUE:
            if self.stop.wait(backoff.next()):
                return
            outcome = handle(inbound)
        if outcome.action is Action.RETRY:
            self._retry(inbound, outcome)
        elif outcome.action is Action.DEAD_LETTER:
            self._dead_letter(inbound, outcome)
        message.ack()
        self.handled += 1

    def _retry(self, inbound: InboundMessage, outcome: Outcome) -> None:
        assert outcome.payload is not None
        payload = outcome.payload.with_changes(retries=outcome.payload.retries + 1)
        headers = failure_headers(inbound, outcome)
        headers[NOT_BEFORE_HEADER] = time.time() + outcome.delay
        queue = cqrs_settings.queue
        self.transport.publish_raw(
            self.transport.exchange(),
            f"cqrs.{queue}.{payload.cqrs_id}",
            encoding.dumps_bytes(encoding.restore_exact(payload.to_dict())),
            headers,
        )

    def _dead_letter(self, inbound: InboundMessage, outcome: Outcome) -> None:
        _, dlq = self.transport.queues([])
        ttl = cqrs_settings.replica.dead_message_ttl
        self.transport.publish_raw(
            "",
            cqrs_settings.dead_letter_queue,
            inbound.body,
            failure_headers(inbound, outcome),
            declare=[dlq],
            expiration=float(ttl) if ttl else None,
        )


def _float(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


__all__ = ["KombuTransport", "ROUTING_KEY_HEADER", "Outcome"]
