"""RabbitMQ connection cut mid-stream and restored (through a loopback proxy the test controls):
the consumer reconnects with back-off, declares its topology again, and nothing is lost."""

from __future__ import annotations

import threading
import time

import pytest
from django.test import override_settings

from integration_tests.failure_helpers import Rabbit, body, declare, names, rabbit_cqrs
from integration_tests.harness import RABBIT_HOST, RABBIT_PORT, rabbit_cleanup
from integration_tests.proxy import TcpProxy

pytestmark = pytest.mark.django_db(transaction=True)


def test_proxy_cut_delay_restore(rabbitmq):
    import pika

    with TcpProxy(RABBIT_HOST, RABBIT_PORT) as proxy:
        params = pika.ConnectionParameters("127.0.0.1", proxy.port, connection_attempts=1, socket_timeout=2)
        connection = pika.BlockingConnection(params)
        assert connection.is_open and proxy.connections == 1
        proxy.delay(0.05)
        connection.channel().close()
        proxy.delay(0)
        proxy.cut()
        with pytest.raises(pika.exceptions.AMQPError):
            connection.channel()
        with pytest.raises(pika.exceptions.AMQPConnectionError):
            pika.BlockingConnection(params)
        assert proxy.refused >= 1
        proxy.restore()
        again = pika.BlockingConnection(params)
        assert again.is_open
        again.close()


def test_consumer_survives_broker_connection_cuts(rabbitmq, caplog):
    from dj_cqrs.process.lifecycle import StopFlag
    from dj_cqrs.transport.rabbit_consumer import RabbitMQConsumer
    from tests.apps.replica_app.models import SimplestModelRef

    exchange, queue = names("cut")
    total = 300
    try:
        with TcpProxy(RABBIT_HOST, RABBIT_PORT) as proxy:
            url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2F?connection_attempts=1&socket_timeout=2"
            with override_settings(CQRS=rabbit_cqrs(exchange, queue, url=url, CQRS_BATCH_SIZE=20)):
                declare()
                stop = StopFlag()
                consumer = RabbitMQConsumer(stop=stop, idle_timeout=6)
                errors: list[BaseException] = []

                def producer() -> None:
                    client = Rabbit()  # straight to the broker, not through the proxy
                    try:
                        for pk in range(1, total + 1):
                            client.publish(exchange, "simplest", body("simplest", pk, data={"name": f"n{pk}"}))
                            if pk in (60, 180):
                                # Cut while the consumer is busy, keep publishing while it is away.
                                deadline = time.monotonic() + 10
                                while consumer.handled < pk - 30 and time.monotonic() < deadline:
                                    time.sleep(0.01)
                                proxy.cut()
                            if pk in (120, 240):
                                time.sleep(1.0)
                                proxy.restore()
                            if pk == 250:
                                proxy.delay(0.02)  # a slow link for the tail of the stream
                    except BaseException as exc:  # noqa: BLE001 - reported by the test
                        errors.append(exc)
                    finally:
                        client.close()

                thread = threading.Thread(target=producer, daemon=True)
                thread.start()
                watchdog = threading.Timer(120, stop.set)
                watchdog.start()
                try:
                    consumer.run()
                finally:
                    watchdog.cancel()
                    thread.join(30)
                assert not errors, errors
                assert proxy.cuts == 2
                assert consumer.reconnects >= 2
                assert set(SimplestModelRef.objects.values_list("pk", flat=True)) == set(range(1, total + 1))
                probe = Rabbit()
                try:
                    assert probe.count(queue) == 0
                    assert probe.count(f"dead_letter_{queue}") == 0
                finally:
                    probe.close()
                print(f"handled {consumer.handled} deliveries for {total} messages, {consumer.reconnects} reconnects")
    finally:
        rabbit_cleanup(exchange, [queue, f"dead_letter_{queue}"])


def test_dead_letter_queue_deleted_while_consuming_is_declared_again(rabbitmq, caplog):
    """A re-publish the broker returns as unroutable (an operator deleted the queue) is not lost:
    the consumer declares the queue again and re-publishes."""
    from dj_cqrs.process.lifecycle import StopFlag
    from dj_cqrs.transport.rabbit_consumer import RabbitMQConsumer

    exchange, queue = names("ret")
    dlq = f"dead_letter_{queue}"
    try:
        with override_settings(CQRS=rabbit_cqrs(exchange, queue)):
            declare()
            stop = StopFlag()
            consumer = RabbitMQConsumer(stop=stop, max_messages=2)
            errors: list[BaseException] = []

            def saboteur() -> None:
                client = Rabbit()
                try:
                    deadline = time.monotonic() + 20
                    while consumer.channel is None and time.monotonic() < deadline:
                        time.sleep(0.01)
                    client.channel.queue_delete(dlq)  # after the consumer declared its topology
                    client.publish(exchange, "simplest", b"not json")
                    client.publish(exchange, "simplest", body("simplest", 1, data={"name": "after"}))
                except BaseException as exc:  # noqa: BLE001 - reported by the test
                    errors.append(exc)
                finally:
                    client.close()

            thread = threading.Thread(target=saboteur, daemon=True)
            thread.start()
            watchdog = threading.Timer(60, stop.set)
            watchdog.start()
            try:
                consumer.run()
            finally:
                watchdog.cancel()
                thread.join(10)
            assert not errors, errors
            assert consumer.handled == 2
            probe = Rabbit()
            try:
                letters = probe.drain(dlq)
            finally:
                probe.close()
            assert [(props.headers["x-cqrs-reason"], raw) for _, props, raw in letters] == [("invalid_json", b"not json")]
            assert any("returned as unroutable" in r.getMessage() for r in caplog.records)
    finally:
        rabbit_cleanup(exchange, [queue, dlq])
