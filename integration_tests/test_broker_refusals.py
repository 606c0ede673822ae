"""Refusals by the real RabbitMQ (guest with a wrong password, a virtual host that does not exist),
and fail-fast publishing with the broker port closed.

A refusal raises ``BrokerRefused`` (a ``PublishFailed``) at once, naming the URL without its
password, with no retry and no sleep, in the RabbitMQ and the kombu transports. No user is created:
guest with a wrong password is enough. Skipped without a broker, failing under CI=true.
"""

from __future__ import annotations

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
