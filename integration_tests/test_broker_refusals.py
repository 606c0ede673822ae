"""Refusals by the real RabbitMQ (guest with a wrong password, a virtual host that does not exist),
fail-fast publishing with the broker port closed, and batches sent now and confirmed later (the
relay's pipeline), also when the connection is lost before the confirms.

A refusal raises ``BrokerRefused`` (a ``PublishFailed``) at once, naming the URL without its
password, with no retry and no sleep, in the RabbitMQ and the kombu transports. No user is created:
guest with a wrong password is enough. Skipped without a broker, failing under CI=true.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import pytest
from django.test import override_settings

from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.exceptions import BrokerRefused, PublishFailed
from dj_cqrs.transport.kombu import KombuTransport
from dj_cqrs.transport.rabbit_mq import RabbitMQTransport
from integration_tests.failure_helpers import names
from integration_tests.harness import RABBIT_HOST, RABBIT_PORT

#: With these retries a retried publish would sleep 0.5 + 1.0 + 1.5 s: a refusal must not.
RETRIES = {"publish_retries": 3, "publish_retry_delay": 0.5, "confirm_timeout": 5, "CQRS_OUTBOX": False}


def settings_for(transport: str, url: str) -> dict[str, Any]:
    exchange, queue = names("refused")
    return {"transport": transport, "url": url, "exchange": exchange, "queue": queue, "master": RETRIES}


def payload() -> TransportPayload:
    return TransportPayload("SAVE", "simplest", {"id": 1, "name": "n", "cqrs_revision": 0}, 1)


def produce(transport: Any, **kwargs: Any) -> tuple[float, BaseException]:
    start = time.monotonic()
    with pytest.raises(PublishFailed) as caught:
        transport.produce_many([payload()], **kwargs)
    return time.monotonic() - start, caught.value


RABBIT = "dj_cqrs.transport.RabbitMQTransport"
KOMBU = "dj_cqrs.transport.KombuTransport"


@pytest.mark.parametrize(("path", "transport_cls"), [(RABBIT, RabbitMQTransport), (KOMBU, KombuTransport)])
def test_wrong_password_is_reported_as_a_refusal_and_not_retried(rabbitmq, path, transport_cls, caplog):
    url = f"amqp://guest:wrong-password@{RABBIT_HOST}:{RABBIT_PORT}/%2F"
    transport = transport_cls()
    with override_settings(CQRS=settings_for(path, url)):
        seconds, error = produce(transport)
    transport.clean_connection()
    assert isinstance(error, BrokerRefused), repr(error)
    assert seconds < 1.0  # no retry sleeps
    assert "wrong-password" not in str(error) and "wrong-password" not in caplog.text
    assert f"{RABBIT_HOST}:{RABBIT_PORT}" in error.url
    assert "password" in error.reason


@pytest.mark.parametrize(("path", "transport_cls"), [(RABBIT, RabbitMQTransport), (KOMBU, KombuTransport)])
def test_missing_virtual_host_is_reported_as_a_refusal(rabbitmq, path, transport_cls):
    url = f"amqp://guest:guest@{RABBIT_HOST}:{RABBIT_PORT}/dj_cqrs_no_such_vhost"
    transport = transport_cls()
    with override_settings(CQRS=settings_for(path, url)):
        seconds, error = produce(transport)
    transport.clean_connection()
    assert isinstance(error, BrokerRefused), repr(error)
    assert seconds < 1.0
    assert "dj_cqrs_no_such_vhost" in error.url


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(("path", "transport_cls"), [(RABBIT, RabbitMQTransport), (KOMBU, KombuTransport)])
def test_fail_fast_with_the_broker_port_closed(rabbitmq, path, transport_cls):
    url = f"amqp://guest:guest@127.0.0.1:{_closed_port()}/%2F"
    transport = transport_cls()
    with override_settings(CQRS=settings_for(path, url)):
        fast, error = produce(transport, fail_fast=True)
        assert type(error) is PublishFailed
        slow, _ = produce(transport)  # the default keeps its retries (sleeps of 0.5 + 1.0 + 1.5 s)
    transport.clean_connection()
    assert fast < 0.5
    assert slow > 1.0


# -- batches sent now and confirmed later (the relay's pipeline) -----------------------------------


def _bound_queue(exchange: str, queue: str) -> Any:
    from integration_tests.failure_helpers import Rabbit

    client = Rabbit()
    client.channel.exchange_declare(exchange, exchange_type="topic", durable=True)
    client.channel.queue_declare(queue, durable=False, auto_delete=False)
    client.channel.queue_bind(queue, exchange, routing_key="simplest")
    return client


def _payloads(start: int, count: int) -> list[TransportPayload]:
    return [
        TransportPayload("SAVE", "simplest", {"id": pk, "name": "n", "cqrs_revision": 0}, pk)
        for pk in range(start, start + count)
    ]


@pytest.mark.parametrize("drop_connection", [False, True])
def test_batches_sent_then_confirmed_all_arrive(rabbitmq, drop_connection):
    from integration_tests.harness import rabbit_cleanup

    url = f"amqp://guest:guest@{RABBIT_HOST}:{RABBIT_PORT}/%2F"
    settings = settings_for(RABBIT, url)
    exchange, queue = settings["exchange"], settings["queue"]
    client = _bound_queue(exchange, queue)
    transport = RabbitMQTransport()
    try:
        with override_settings(CQRS=settings):
            first = transport.send_batch(_payloads(1, 700))
            second = transport.send_batch(_payloads(701, 700))
            if drop_connection:  # the broker's confirms of both batches are lost with it
                transport._producer().abort()
            transport.confirm_batch(first)
            transport.confirm_batch(second)
        deadline = time.monotonic() + 10
        while client.count(queue) < 1400 and time.monotonic() < deadline:
            time.sleep(0.05)
        pks = [json.loads(body)["instance_pk"] for _m, _p, body in client.drain(queue)]
        assert set(pks) == set(range(1, 1401))  # none lost (a re-published one may come twice)
        if not drop_connection:
            assert len(pks) == 1400
    finally:
        transport.clean_connection()
        client.close()
        rabbit_cleanup(exchange, [queue])
