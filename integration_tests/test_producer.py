"""The RabbitMQ producer against the real broker: connection reuse per thread and per process,
reconnection after the broker or the network drops the connection, ``PublishFailed`` after the
configured retries (with the change committed), unroutable messages, and a large confirmed batch.

The master side runs in the pytest process (``tests.apps.master_app`` on SQLite, ``CQRS`` pointed
at RabbitMQ with ``override_settings``, ``CQRS_OUTBOX=False`` so the committing thread publishes).
Connections go through a loopback :class:`~integration_tests.proxy.TcpProxy`, which counts the
connections the producer opens. Exchange and queue names are unique to each test.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import re
import socket
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import transaction
from django.test import override_settings

from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.exceptions import PublishFailed
from integration_tests.failure_helpers import Rabbit, names, wait_for
from integration_tests.harness import RABBIT_HOST, RABBIT_PORT, rabbit_cleanup
from integration_tests.proxy import TcpProxy

pytestmark = pytest.mark.django_db(transaction=True)


def producer_settings(exchange: str, port: int, **master: Any) -> dict[str, Any]:
    return {
        "transport": "dj_cqrs.transport.RabbitMQTransport",
        "url": f"amqp://guest:guest@127.0.0.1:{port}/%2F?connection_attempts=1&socket_timeout=3",
        "exchange": exchange,
        "queue": "unused_by_the_producer",
        "master": {
            "CQRS_MESSAGE_TTL": 3600,
            "CQRS_OUTBOX": False,
            "publish_retries": 3,
            "publish_retry_delay": 0.05,
            "confirm_timeout": 5,
            **master,
        },
    }


class Bound:
    """A queue bound to the test exchange that receives every ``simplest`` message."""

    def __init__(self, exchange: str, queue: str) -> None:
        self.client = Rabbit()
        self.queue = queue
        self.client.channel.exchange_declare(exchange, exchange_type="topic", durable=True)
        self.client.channel.queue_declare(queue, durable=False, auto_delete=False)
        self.client.channel.queue_bind(queue, exchange, routing_key="simplest")

    def count(self) -> int:
        return self.client.count(self.queue)

    def pks(self) -> list[Any]:
        import json

        return [json.loads(body)["instance_pk"] for _m, _p, body in self.client.drain(self.queue)]


@pytest.fixture
def rabbit_names(rabbitmq) -> Iterator[tuple[str, str]]:
    exchange, queue = names("prod")
    yield exchange, queue
    rabbit_cleanup(exchange, [queue])


@pytest.fixture
def proxy(rabbitmq) -> Iterator[TcpProxy]:
    with TcpProxy(RABBIT_HOST, RABBIT_PORT) as proxy:
        yield proxy


@contextlib.contextmanager
def producing(exchange: str, port: int, **master: Any) -> Iterator[Bound]:
    from dj_cqrs.transport import reset_transport

    bound = Bound(exchange, f"{exchange}_bound")
    try:
        with override_settings(CQRS=producer_settings(exchange, port, **master)):
            try:
                yield bound
            finally:
                reset_transport()
    finally:
        bound.client.close()


def payload(pk: int) -> TransportPayload:
    return TransportPayload(
        "SAVE",
        "simplest",
        {"id": pk, "name": f"n{pk}", "cqrs_revision": 0, "cqrs_updated": "2026-11-22 08:00:00+00:00"},
        pk,
    )


def broker_connections(state: str = "running") -> list[tuple[str, str]]:
    """``(erlang pid, connection_name)`` of the broker's named connections in ``state``."""
    out = subprocess.run(
        ["rabbitmqctl", "list_connections", "-s", "pid", "state", "client_properties"],
        capture_output=True, text=True, timeout=30,
    ).stdout
    found = []
    for line in out.splitlines():
        pid, current, properties = (line.split("\t", 2) + ["", ""])[:3]
        match = re.search(r'\{"connection_name","([^"]*)"\}', properties)
        if match and current.strip() == state:
            found.append((pid.strip(), match.group(1)))
    return found


def producer_name(pid: int) -> str:
    return f"dj_cqrs producer {socket.gethostname()}:{pid}"


# -- connection reuse ----------------------------------------------------------------------------


def test_one_connection_reused_by_many_publishes(rabbit_names, proxy):
    from tests.apps.master_app.models import SimplestModel

    exchange, _ = rabbit_names
    with producing(exchange, proxy.port) as bound:
        for i in range(1, 101):
            SimplestModel.objects.create(id=i, name=f"autocommit {i}")  # one publish per save
        with transaction.atomic():
            for i in range(101, 111):
                SimplestModel.objects.create(id=i, name=f"in one transaction {i}")
        assert proxy.accepted == 1
        assert proxy.connections == 1
        wait_for(lambda: bound.count() == 110, 10, message="110 messages in the bound queue")
        assert sorted(bound.pks()) == list(range(1, 111))


def test_threads_get_separate_connections(rabbit_names, proxy):
    from dj_cqrs.transport import get_transport

    exchange, _ = rabbit_names
    threads_count, per_thread = 4, 25
    with producing(exchange, proxy.port) as bound:
        get_transport().produce(payload(0))
        assert proxy.accepted == 1
        published = threading.Barrier(threads_count + 1, timeout=20)
        release = threading.Event()
        errors: list[BaseException] = []

        def work(index: int) -> None:
            try:
                for n in range(per_thread):
                    get_transport().produce(payload(1000 * (index + 1) + n))
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)
            finally:
                published.wait()
                release.wait(20)  # keep the thread (and its connection) alive while counting

        threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(threads_count)]
        for thread in threads:
            thread.start()
        published.wait()
        try:
            assert errors == []
            assert proxy.accepted == 1 + threads_count
            assert proxy.connections == 1 + threads_count
        finally:
            release.set()
            for thread in threads:
                thread.join(10)
        get_transport().produce(payload(1))  # the main thread still has its own connection
        assert proxy.accepted == 1 + threads_count
        expected = [0, 1] + [1000 * (i + 1) + n for i in range(threads_count) for n in range(per_thread)]
        wait_for(lambda: bound.count() == len(expected), 10, message="every message in the bound queue")
        assert sorted(bound.pks()) == sorted(expected)


def _child_publishes(ready: Any, go: Any, result: Any, on_class: bool = False) -> None:
    from dj_cqrs.transport import get_transport
    from dj_cqrs.transport.rabbit_mq import RabbitMQTransport

    try:
        ready.send(os.getpid())
        if not go.poll(20):
            result.send("parent never said go")
            return
        go.recv()
        # What a post-fork hook may do: must not close the parent's connection (it shares its socket).
        if on_class:
            RabbitMQTransport.clean_connection()  # django-cqrs's classmethod style
        else:
            get_transport().clean_connection()
        for pk in range(500, 510):
            get_transport().produce(payload(pk))
        result.send("published")
        go.poll(20)  # hold the connection open until the parent has looked at the broker
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        result.send(repr(exc))


@pytest.mark.parametrize("on_class", [False, True], ids=["instance_clean_connection", "class_clean_connection"])
def test_forked_child_opens_its_own_connection(rabbit_names, proxy, on_class):
    from dj_cqrs.transport import get_transport

    exchange, _ = rabbit_names
    context = multiprocessing.get_context("fork")
    with producing(exchange, proxy.port) as bound:
        get_transport().produce(payload(1))  # the parent's connection exists before the fork
        assert proxy.accepted == 1
        ready_child, ready_parent = context.Pipe()
        go_parent, go_child = context.Pipe()
        result_child, result_parent = context.Pipe()
        child = context.Process(target=_child_publishes, args=(ready_child, go_child, result_child, on_class))
        child.start()
        try:
            assert ready_parent.poll(20)
            child_pid = ready_parent.recv()
            go_parent.send("go")
            assert result_parent.poll(30), "the child did not report"
            assert result_parent.recv() == "published"
            assert proxy.accepted == 2  # the child's own connection, the parent's is untouched
            names_seen = {name for _pid, name in broker_connections()}
            assert producer_name(os.getpid()) in names_seen
            assert producer_name(child_pid) in names_seen
        finally:
            go_parent.send("exit")
            child.join(20)
            if child.is_alive():
                child.kill()
                child.join(5)
        assert child.exitcode == 0
        # The parent's connection survived the child (which never closed or used it).
        get_transport().produce(payload(2))
        assert proxy.accepted == 2
        wait_for(lambda: bound.count() == 12, 10, message="12 messages in the bound queue")
        assert sorted(bound.pks()) == [1, 2, *range(500, 510)]


def _kombu_child_cleans(result: Any) -> None:
    from dj_cqrs.transport.kombu import KombuTransport

    try:
        KombuTransport.clean_connection()  # a post-fork hook, django-cqrs's classmethod style
        result.send("cleaned")
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        result.send(repr(exc))


def test_kombu_clean_connection_in_a_forked_child_leaves_the_parent_connection_working(rabbit_names, proxy):
    """Releasing the inherited kombu connection in the child would send ``Connection.Close`` and
    shut the socket down under the parent: the child only drops it."""
    from dj_cqrs.transport import get_transport

    exchange, _ = rabbit_names
    context = multiprocessing.get_context("fork")
    settings = producer_settings(exchange, proxy.port)
    settings["transport"] = "dj_cqrs.transport.kombu.KombuTransport"
    settings["url"] = f"amqp://guest:guest@127.0.0.1:{proxy.port}//"
    bound = Bound(exchange, f"{exchange}_bound")
    try:
        with override_settings(CQRS=settings):
            try:
                get_transport().produce(payload(1))
                assert proxy.accepted == 1
                result_child, result_parent = context.Pipe()
                child = context.Process(target=_kombu_child_cleans, args=(result_child,))
                child.start()
                assert result_parent.poll(30), "the child did not report"
                assert result_parent.recv() == "cleaned"
                child.join(20)
                assert child.exitcode == 0
                get_transport().produce(payload(2))  # through the parent's untouched connection
                assert proxy.accepted == 1
                wait_for(lambda: bound.count() == 2, 10, message="2 messages in the bound queue")
                assert sorted(bound.pks()) == [1, 2]
            finally:
                from dj_cqrs.transport import reset_transport

                reset_transport()
    finally:
        bound.client.close()


# -- reconnection --------------------------------------------------------------------------------


def test_broker_closing_the_connection_then_next_publish_reconnects(rabbit_names):
    from tests.apps.master_app.models import SimplestModel

    exchange, _ = rabbit_names
    with producing(exchange, RABBIT_PORT) as bound:
        SimplestModel.objects.create(id=1, name="before")
        mine = [pid for pid, name in broker_connections() if name == producer_name(os.getpid())]
        assert len(mine) == 1, mine
        subprocess.run(
            ["rabbitmqctl", "close_connection", mine[0], "dj_cqrs test: closed by the broker"],
            check=True, capture_output=True, timeout=30,
        )
        # The broker has closed it on its side (it waits for the client's Close-Ok, which the idle
        # producer has not sent: the producer learns of the close on its next publish).
        assert mine[0] not in {pid for pid, _name in broker_connections()}
        SimplestModel.objects.create(id=2, name="after")  # must not raise
        after = [pid for pid, name in broker_connections() if name == producer_name(os.getpid())]
        assert len(after) == 1 and after != mine
        wait_for(lambda: bound.count() >= 2, 10, message="both messages in the bound queue")
        assert sorted(set(bound.pks())) == [1, 2]


def test_idle_connection_dropped_for_missed_heartbeats_then_next_publish_reconnects(rabbit_names):
    """django-cqrs issue #183: pika services heartbeats only inside its own calls, so the broker
    drops an idle producer connection; the next publish must still go through."""
    from dj_cqrs.transport import get_transport

    exchange, _ = rabbit_names
    with producing(exchange, RABBIT_PORT) as bound:
        # No retry to spare: the producer must notice the dead connection before publishing.
        settings = producer_settings(exchange, RABBIT_PORT, publish_retries=0)
        settings["url"] = f"amqp://guest:guest@127.0.0.1:{RABBIT_PORT}/%2F?heartbeat=1&connection_attempts=1"
        with override_settings(CQRS=settings):
            get_transport().produce(payload(1))
            name = producer_name(os.getpid())
            assert name in {n for _pid, n in broker_connections()}
            wait_for(
                lambda: name not in {n for _pid, n in broker_connections()}, 20, interval=0.5,
                message="the broker to drop the idle connection (missed heartbeats)",
            )
            get_transport().produce(payload(2))  # must not raise
            assert name in {n for _pid, n in broker_connections()}
        wait_for(lambda: bound.count() == 2, 10, message="both messages in the bound queue")
        assert sorted(bound.pks()) == [1, 2]


def test_exchange_deleted_under_the_producer_is_declared_again(rabbit_names, caplog):
    from dj_cqrs.transport import get_transport

    exchange, _ = rabbit_names
    caplog.set_level(logging.WARNING, logger="django-cqrs")
    with producing(exchange, RABBIT_PORT) as bound:
        get_transport().produce(payload(1))
        bound.client.channel.exchange_delete(exchange)
        get_transport().produce(payload(2))  # the broker closes the channel (404): retried at once
        bound.client.channel.exchange_declare(exchange, exchange_type="topic", durable=True, passive=True)
    assert "channel closed before the confirms" in caplog.text
    assert "confirm(s) missing" not in caplog.text  # it did not wait for the confirm timeout


def test_network_cut_then_next_publish_reconnects(rabbit_names, proxy, caplog):
    from tests.apps.master_app.models import SimplestModel

    exchange, _ = rabbit_names
    caplog.set_level(logging.WARNING, logger="django-cqrs")
    with producing(exchange, proxy.port) as bound:
        SimplestModel.objects.create(id=1, name="before")
        proxy.cut()
        proxy.restore()
        SimplestModel.objects.create(id=2, name="after")  # the first attempt hits the cut connection
        assert proxy.accepted == 2
        SimplestModel.objects.create(id=3, name="reused")
        assert proxy.accepted == 2
        wait_for(lambda: bound.count() >= 3, 10, message="three messages in the bound queue")
        assert sorted(set(bound.pks())) == [1, 2, 3]
    assert "CQRS publish attempt 1 failed" in caplog.text


def test_publish_retries_until_the_network_comes_back(rabbit_names, proxy):
    from tests.apps.master_app.models import SimplestModel

    exchange, _ = rabbit_names
    with producing(exchange, proxy.port, publish_retries=8, publish_retry_delay=0.1) as bound:
        SimplestModel.objects.create(id=1, name="before")
        proxy.cut()
        timer = threading.Timer(0.5, proxy.restore)  # the retries back off 0.1, 0.2, 0.3 ... s
        timer.start()
        try:
            SimplestModel.objects.create(id=2, name="during the outage")
        finally:
            timer.cancel()
            proxy.restore()
        assert proxy.refused >= 1
        wait_for(lambda: bound.count() >= 2, 10, message="both messages in the bound queue")
        assert sorted(set(bound.pks())) == [1, 2]


def test_publish_on_a_stalled_link_fails_without_waiting_for_the_link(rabbit_names, proxy):
    """A confirm that does not come within ``confirm_timeout`` fails the publish, and the broken
    connection is dropped at once, not closed with a handshake that waits on the stalled link."""
    from dj_cqrs.transport import get_transport

    exchange, _ = rabbit_names
    with producing(exchange, proxy.port, confirm_timeout=0.5, publish_retries=0):
        get_transport().produce(payload(1))
        proxy.delay(15)  # every chunk, either way, now waits 15 s: no confirm, no Close-Ok
        watchdog = threading.Timer(8, proxy.cut)  # ends the stall if the publish waits for it
        watchdog.start()
        try:
            with pytest.raises(PublishFailed, match="confirm"):
                get_transport().produce(payload(2))
        finally:
            watchdog.cancel()
        assert proxy.cuts == 0, "the publish waited for the stalled link until the watchdog cut it"
        proxy.delay(0)


# -- failure -------------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens there once the socket is closed


def test_unreachable_broker_raises_publish_failed_and_the_change_stays_committed(caplog):
    from tests.apps.master_app.models import SimplestModel

    caplog.set_level(logging.WARNING, logger="django-cqrs")
    exchange, _ = names("prod")
    with override_settings(CQRS=producer_settings(exchange, _closed_port(), publish_retries=2, publish_retry_delay=0.01)):
        with pytest.raises(PublishFailed, match="after 3 attempts"):
            SimplestModel.objects.create(id=1, name="autocommit")
        with pytest.raises(PublishFailed):
            with transaction.atomic():
                SimplestModel.objects.create(id=2, name="in a transaction")
    assert sorted(SimplestModel.objects.values_list("id", flat=True)) == [1, 2]
    failures = [r for r in caplog.records if r.levelno == logging.ERROR and "failed after" in r.getMessage()]
    assert len(failures) == 2
    assert failures[0].cqrs_id == "simplest"


def test_publish_failed_after_exactly_publish_retries_plus_one_attempts():
    """A 'broker' that accepts TCP connections and hangs up counts the attempts."""
    from tests.apps.master_app.models import SimplestModel

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.1)
    attempts = []
    done = threading.Event()

    def hang_up() -> None:
        while not done.is_set():
            try:
                client, _ = server.accept()
            except OSError:
                continue
            attempts.append(1)
            client.close()

    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()
    exchange, _ = names("prod")
    try:
        for retries in (0, 3):
            attempts.clear()
            settings = producer_settings(exchange, server.getsockname()[1], publish_retries=retries, publish_retry_delay=0)
            with override_settings(CQRS=settings), pytest.raises(PublishFailed):
                SimplestModel.objects.create(name=f"retries={retries}")
            assert len(attempts) == retries + 1
    finally:
        done.set()
        thread.join(5)
        server.close()


def test_unroutable_message_logs_a_warning_and_does_not_raise(rabbit_names, caplog):
    from tests.apps.master_app.models import AllTypesModel, SimplestModel

    exchange, _ = rabbit_names
    caplog.set_level(logging.WARNING, logger="django-cqrs")
    with producing(exchange, RABBIT_PORT) as bound:  # a queue is bound for "simplest" only
        AllTypesModel.objects.create(id=1)
        SimplestModel.objects.create(id=1, name="routed")
        wait_for(lambda: bound.count() == 1, 10, message="the routable message")
    unroutable = [r for r in caplog.records if "unroutable" in r.getMessage()]
    assert len(unroutable) == 1
    assert "'all_types'" in unroutable[0].getMessage()
    assert unroutable[0].levelno == logging.WARNING


# -- volume --------------------------------------------------------------------------------------


def test_a_batch_of_5000_is_confirmed_and_all_arrive(rabbit_names, proxy):
    from tests.apps.master_app.models import SimplestModel

    exchange, _ = rabbit_names
    with producing(exchange, proxy.port) as bound:
        SimplestModel.cqrs.bulk_create([SimplestModel(id=i, name=f"bulk {i}") for i in range(1, 5001)])
        # Confirmed means enqueued: the count is complete as soon as the publish returned.
        assert bound.count() == 5000
        assert proxy.accepted == 1
        assert sorted(bound.pks()) == list(range(1, 5001))
