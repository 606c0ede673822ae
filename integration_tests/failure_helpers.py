"""Helpers for the failure-handling tests: raw publishing, queue inspection, in-process consumers.

Tests that run a consumer in the pytest process use the unit-test replica models
(``tests.apps.replica_app``, SQLite) with ``CQRS`` overridden to a real broker and names unique to
the test. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from integration_tests.harness import RABBIT_HOST, RABBIT_PORT, REDIS_HOST, REDIS_PORT, unique

RABBIT_URL = f"amqp://guest:guest@{RABBIT_HOST}:{RABBIT_PORT}/%2F"
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


def iso_in(seconds: float) -> str:
    moment = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)
    return moment.replace(microsecond=0).isoformat()


def body(
    cqrs_id: str,
    pk: Any,
    revision: int = 0,
    signal: str = "SAVE",
    data: dict[str, Any] | None = None,
    retries: int = 0,
    expires: str | None = "default",
    correlation_id: str | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A django-cqrs 3.x body (as a dict)."""
    instance = {"id": pk, "cqrs_revision": revision, "cqrs_updated": "2026-11-22 08:00:00+00:00"}
    instance.update(data or {})
    return {
        "signal_type": signal,
        "cqrs_id": cqrs_id,
        "instance_data": instance,
        "previous_data": None,
        "instance_pk": pk,
        "correlation_id": correlation_id,
        "retries": retries,
        "expires": iso_in(3600) if expires == "default" else expires,
        "meta": meta if meta is not None else {},
    }


def encode(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    return json.dumps(value).encode("utf-8")


class Rabbit:
    """A pika connection for the test itself (publishing, reading queues)."""

    def __init__(self, host: str = RABBIT_HOST, port: int = RABBIT_PORT) -> None:
        import pika

        self._pika = pika
        self.connection = pika.BlockingConnection(pika.ConnectionParameters(host, port))
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()

    def publish(
        self,
        exchange: str,
        routing_key: str,
        payload: Any,
        headers: dict[str, Any] | None = None,
        mandatory: bool = True,
    ) -> None:
        self.channel.basic_publish(
            exchange=exchange,
            routing_key=routing_key,
            body=encode(payload),
            properties=self._pika.BasicProperties(content_type="text/plain", delivery_mode=2, headers=headers),
            mandatory=mandatory,
        )

    def count(self, queue: str) -> int:
        return int(self.channel.queue_declare(queue, passive=True).method.message_count)

    def consuming(self, queue: str) -> bool:
        """Whether a consumer is attached to ``queue`` (so its topology, bindings included, is
        declared: the consumers here declare before they consume)."""
        channel = self.connection.channel()
        try:
            return int(channel.queue_declare(queue, passive=True).method.consumer_count) > 0
        except self._pika.exceptions.ChannelClosedByBroker:
            return False
        finally:
            if channel.is_open:
                channel.close()

    def exists(self, queue: str) -> bool:
        channel = self.connection.channel()
        try:
            channel.queue_declare(queue, passive=True)
            return True
        except self._pika.exceptions.ChannelClosedByBroker:
            return False
        finally:
            if channel.is_open:
                channel.close()

    def drain(self, queue: str, limit: int = 100000) -> list[tuple[Any, Any, bytes]]:
        """Take (and acknowledge) every message of ``queue``."""
        taken: list[tuple[Any, Any, bytes]] = []
        while len(taken) < limit:
            method, properties, payload = self.channel.basic_get(queue, auto_ack=True)
            if method is None:
                break
            taken.append((method, properties, payload))
        return taken

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.connection.close()


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1, message: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message or predicate}: last={last!r}")


def rabbit_cqrs(exchange: str, queue: str, url: str = RABBIT_URL, **replica: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "transport": "dj_cqrs.transport.RabbitMQTransport",
        "url": url,
        "exchange": exchange,
        "queue": queue,
        "master": {"CQRS_MESSAGE_TTL": 3600},
        "replica": {"CQRS_MAX_RETRIES": 3, "CQRS_RETRY_DELAY": 0, **replica},
    }
    return settings


def kombu_cqrs(exchange: str, queue: str, url: str = REDIS_URL, **replica: Any) -> dict[str, Any]:
    settings = rabbit_cqrs(exchange, queue, url, **replica)
    settings["transport"] = "dj_cqrs.transport.KombuTransport"
    return settings


def names(prefix: str = "fail") -> tuple[str, str]:
    run = unique(prefix)
    return f"cqrs_{run}", f"replica_{run}"


class Watchdog:
    """Sets a consumer's stop flag when ``predicate`` holds or the deadline passes."""

    def __init__(self, stop: Any, predicate: Callable[[], bool] | None, timeout: float) -> None:
        self.stop = stop
        self.predicate = predicate
        self.timeout = timeout
        self.timed_out = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.timeout
        while not self._done.wait(0.05):
            if self.predicate is not None:
                try:
                    if self.predicate():
                        break
                except Exception:  # noqa: BLE001 - a predicate that races the consumer: ask again
                    pass
            if time.monotonic() > deadline:
                self.timed_out = True
                break
        self.stop.set()

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._done.set()
        self._thread.join(5)


def run_consumer(
    until: Callable[[], bool] | None = None,
    timeout: float = 30.0,
    max_messages: int | None = None,
    cqrs_ids: list[str] | None = None,
) -> Any:
    """Run this settings' consumer in the calling thread until ``until()`` holds (checked from a
    watchdog thread), ``max_messages`` were handled, or ``timeout`` seconds passed."""
    from dj_cqrs.process.lifecycle import StopFlag
    from dj_cqrs.transport import get_transport
    from dj_cqrs.transport.kombu import KombuTransport
    from dj_cqrs.transport.rabbit_consumer import RabbitMQConsumer

    stop = StopFlag()
    transport = get_transport()
    if isinstance(transport, KombuTransport):
        from dj_cqrs.transport.kombu_consumer import KombuConsumer

        consumer: Any = KombuConsumer(transport, cqrs_ids=cqrs_ids, stop=stop, max_messages=max_messages)
    else:
        consumer = RabbitMQConsumer(cqrs_ids=cqrs_ids, stop=stop, max_messages=max_messages)
    with Watchdog(stop, until, timeout) as dog:
        consumer.run()
    consumer.timed_out = dog.timed_out
    return consumer


@contextlib.contextmanager
def rabbit() -> Iterator[Rabbit]:
    client = Rabbit()
    try:
        yield client
    finally:
        client.close()


def declare() -> None:
    """Declare this settings' topology (queue, bindings, dead-letter queue) as a consumer would."""
    from dj_cqrs.conf import cqrs_settings
    from dj_cqrs.registry import replica_registry
    from dj_cqrs.transport import get_transport
    from dj_cqrs.transport.kombu import KombuTransport

    transport = get_transport()
    if isinstance(transport, KombuTransport):
        from dj_cqrs.transport.kombu_connection import new_connection

        with new_connection() as conn:
            channel = conn.channel()
            for queue in transport.queues(sorted(replica_registry.models)):
                queue(channel).declare()
        return
    from dj_cqrs.transport.rabbit_connection import declare_topology, open_blocking_connection

    connection = open_blocking_connection("test")
    try:
        declare_topology(
            connection.channel(),
            cqrs_settings.exchange,
            cqrs_settings.queue,
            cqrs_settings.dead_letter_queue,
            sorted(replica_registry.models),
        )
    finally:
        connection.close()


class KombuClient:
    """The test's own kombu connection (Redis): the same methods as :class:`Rabbit`."""

    def __init__(self, url: str = REDIS_URL, transport_options: dict[str, Any] | None = None) -> None:
        from kombu import Connection

        self.prefix = (transport_options or {}).get("global_keyprefix", "")
        self.connection = Connection(url, transport_options=transport_options or {})
        self.connection.ensure_connection(max_retries=3)
        self.channel = self.connection.channel()

    def publish(
        self,
        exchange: str,
        routing_key: str,
        payload: Any,
        headers: dict[str, Any] | None = None,
        mandatory: bool = True,
    ) -> None:
        from kombu import Exchange, Producer

        target = Exchange(exchange, type="topic", durable=True) if exchange else ""
        Producer(self.channel).publish(
            encode(payload),
            exchange=target,
            routing_key=routing_key,
            headers=headers or {},
            content_type="text/plain",
            content_encoding="utf-8",
            delivery_mode=2,
        )

    def _queue(self, name: str) -> Any:
        from kombu import Queue

        return Queue(name, routing_key=name, durable=True)(self.channel)

    def count(self, queue: str) -> int:
        return int(self._queue(queue).queue_declare().message_count)

    def exists(self, queue: str) -> bool:
        return True

    def bound(self, exchange: str, queue: str) -> bool:
        """Whether a consumer has bound ``queue`` to ``exchange`` (declared its topology)."""
        return any(item[-1] == queue for item in self.channel.get_table(exchange))

    def redis(self) -> Any:
        return self.channel.client

    def drain(self, queue: str, limit: int = 100000) -> list[tuple[Any, Any, bytes]]:
        taken: list[tuple[Any, Any, bytes]] = []
        bound = self._queue(queue)
        while len(taken) < limit:
            message = bound.get(no_ack=True, accept=None)
            if message is None:
                break
            raw = message.body if isinstance(message.body, bytes) else str(message.body).encode("utf-8")
            taken.append((message, _Props(message), raw))
        return taken

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.connection.release()


class _Props:
    def __init__(self, message: Any) -> None:
        self.headers = dict(message.headers or {})
        self.expiration = message.properties.get("expiration")


def redis_cleanup(*needles: str) -> None:
    """Delete every Redis key containing one of ``needles`` (a test's unique names)."""
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    try:
        for needle in needles:
            keys = list(client.scan_iter(match=f"*{needle}*", count=1000))
            if keys:
                client.delete(*keys)
    finally:
        client.close()


class FaultService:
    """The ``faults`` replica service (integration_tests/services/faults) on its own database,
    exchange and queue; the test reads its tables straight from PostgreSQL."""

    def __init__(self, service: Any, db: str, exchange: str, queue: str) -> None:
        self.service = service
        self.db = db
        self.exchange = exchange
        self.queue = queue
        self.dlq = f"dead_letter_{queue}"
        self._conn: Any = None

    def sql(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        import psycopg2

        from integration_tests.harness import PG_HOST, PG_PORT

        if self._conn is None or self._conn.closed:
            self._conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname=self.db)
            self._conn.autocommit = True
        with self._conn.cursor() as cursor:
            cursor.execute(query, params)
            return list(cursor.fetchall()) if cursor.description else []

    def applied(self) -> dict[int, int]:
        """How many times each object was really applied (created or updated)."""
        return dict(self.sql("SELECT object_id, COUNT(*) FROM faults_applied GROUP BY object_id"))

    def rows(self) -> set[int]:
        return {pk for (pk,) in self.sql("SELECT id FROM faults_faultref")}

    def start(self, *args: str) -> Any:
        return self.service.start("cqrs_consume", *args)

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()


@contextlib.contextmanager
def fault_service(run: str | None = None, **env: str) -> Iterator[FaultService]:
    from integration_tests.harness import OUR_PYTHON, Service, pg_database, rabbit_cleanup

    run = run or unique("flt")
    exchange, queue = f"cqrs_{run}", f"replica_{run}"
    base = {"IT_CQRS_EXCHANGE": exchange, "IT_CQRS_QUEUE": queue, **env}
    with pg_database(f"{run}_replica") as db:
        service = Service("faults", OUR_PYTHON, {**base, "IT_DB_NAME": db})
        service.migrate()
        faults = FaultService(service, db, exchange, queue)
        try:
            yield faults
        finally:
            service.stop_all()
            faults.close()
            if "Kombu" in env.get("IT_CQRS_TRANSPORT", ""):
                redis_cleanup(run)
            else:
                rabbit_cleanup(exchange, [queue, f"dead_letter_{queue}"])


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` that are its workers: spawned (``multiprocessing`` in their
    command line) or forked (the parent's command line), not multiprocessing's resource tracker."""
    import os

    result = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"resource_tracker" not in cmdline and b"forkserver" not in cmdline:
            result.append(int(entry))
    return result
