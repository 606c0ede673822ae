"""A broker outage seen from the committing thread (issue 12): the outbox on, SQLite (the
committing thread publishes), the RabbitMQ transport through a loopback proxy that can refuse
connections.

* While the broker is unreachable, the first save tries once (no retries, no sleeps) and logs one
  WARNING; the saves after it do not try again until the pause is over, and log nothing. Every
  event stays in the outbox, and a later commit after the broker is back publishes them all.
* A refused login (wrong password) is reported as such, at ERROR, once, and not retried.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import override_settings

from dj_cqrs.master.dispatcher import dispatcher
from dj_cqrs.models import OutboxEvent
from dj_cqrs.transport import reset_transport
from integration_tests.failure_helpers import Rabbit, names, wait_for
from integration_tests.harness import RABBIT_HOST, RABBIT_PORT, rabbit_cleanup
from integration_tests.proxy import TcpProxy
from tests.apps.master_app.models import SimplestModel

pytestmark = pytest.mark.django_db(transaction=True)

SAVES = 20


def outbox_settings(exchange: str, port: int, password: str = "guest", **master: Any) -> dict[str, Any]:
    return {
        "transport": "dj_cqrs.transport.RabbitMQTransport",
        "url": f"amqp://guest:{password}@127.0.0.1:{port}/%2F?socket_timeout=3",
        "exchange": exchange,
        "queue": "unused_by_the_producer",
        "master": {"publish_retries": 3, "publish_retry_delay": 0.5, "outbox_grace": 0, "outbox_sweep_interval": 0, **master},
    }


@pytest.fixture
def bound(rabbitmq) -> Iterator[tuple[str, str, Rabbit]]:
    exchange, queue = names("outage")
    client = Rabbit()
    client.channel.exchange_declare(exchange, exchange_type="topic", durable=True)
    client.channel.queue_declare(queue, durable=False, auto_delete=False)
    client.channel.queue_bind(queue, exchange, routing_key="simplest")
    try:
        yield exchange, queue, client
    finally:
        client.close()
        rabbit_cleanup(exchange, [queue])
        reset_transport()
        dispatcher.reset_circuit()


def test_an_unreachable_broker_is_tried_once_and_logged_once(bound, caplog):
    exchange, queue, client = bound
    with TcpProxy(RABBIT_HOST, RABBIT_PORT) as proxy, override_settings(CQRS=outbox_settings(exchange, proxy.port)):
        reset_transport()
        SimplestModel.objects.create(name="before")
        wait_for(lambda: client.count(queue) == 1, timeout=10)
        proxy.cut()
        with caplog.at_level(logging.DEBUG, logger="django-cqrs"):
            for i in range(SAVES):
                SimplestModel.objects.create(name=f"down{i}")
        # At most one connection attempt for all of them (the first save's publish on the dead
        # connection fails; it does not reconnect and retry), none by the saves after it.
        assert proxy.refused <= 1
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]  # pika's own lines included
        assert "stay in the outbox" in warnings[0].getMessage()
        assert OutboxEvent.objects.filter(published_at__isnull=True).count() == SAVES
        assert list(OutboxEvent.objects.filter(attempts__gt=0).values_list("attempts", flat=True)) == [1]

        proxy.restore()
        wait_for(lambda: not dispatcher.circuit_open("default"), timeout=5)  # 2 s after one failure
        with caplog.at_level(logging.INFO, logger="django-cqrs"):
            SimplestModel.objects.create(name="after")  # publishes, then sweeps the backlog
        wait_for(lambda: client.count(queue) == SAVES + 2, timeout=10)
        assert OutboxEvent.objects.filter(published_at__isnull=True).count() == 0
        assert "publishing works again" in caplog.text


def test_a_refused_login_is_reported_as_such_and_not_retried(bound, caplog):
    exchange, queue, client = bound
    with TcpProxy(RABBIT_HOST, RABBIT_PORT) as proxy, override_settings(
        CQRS=outbox_settings(exchange, proxy.port, password="wrong-password")
    ):
        reset_transport()
        with caplog.at_level(logging.WARNING, logger="django-cqrs"):
            for i in range(5):
                SimplestModel.objects.create(name=f"refused{i}")
        assert proxy.accepted == 1  # one login attempt, not publish_retries + 1 of them
        errors = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("django-cqrs")]
        assert [r.levelname for r in errors] == ["ERROR"], [r.getMessage() for r in errors]
        assert "refused" in errors[0].getMessage()
        assert "wrong-password" not in caplog.text
        assert OutboxEvent.objects.filter(published_at__isnull=True).count() == 5
        assert client.count(queue) == 0
