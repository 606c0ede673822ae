"""Broker refusals and fail-fast publishing, without a broker (pika and kombu mocked).

An authentication or authorisation refusal raises ``BrokerRefused`` (a ``PublishFailed``) at once,
naming the URL without its password, and is never retried; ``produce_many(fail_fast=True)`` makes
one attempt and never sleeps. The RabbitMQ transport's own frame marshalling writes the bytes
pika would. The same against the real RabbitMQ: integration_tests/test_broker_refusals.py.
"""

from __future__ import annotations

from typing import Any
from unittest import mock

import amqp.exceptions
import pika
import pika.exceptions
import pika.frame
import pika.spec
import pytest
from django.test import override_settings

from dj_cqrs.core.payload import TransportPayload
from dj_cqrs.exceptions import BrokerRefused, PublishFailed
from dj_cqrs.transport.base import BaseTransport, fail_fast_producer
from dj_cqrs.transport.kombu import KombuTransport
from dj_cqrs.transport.kombu_connection import refused as kombu_refused
from dj_cqrs.transport.rabbit_connection import (
    display_url,
    message_properties,
    redact_password,
    refusal_reason,
)
from dj_cqrs.transport.rabbit_mq import RabbitMQTransport, _Marshaller
from tests.unit.conftest import cqrs_with

URL = "amqp://svc:s3cret@broker.internal:5672/billing"


def payload(pk: int = 1) -> TransportPayload:
    return TransportPayload("SAVE", "simplest", {"id": pk, "name": "n", "cqrs_revision": 0}, pk)


def rabbit(**master: Any) -> Any:
    return override_settings(
        CQRS=cqrs_with(
            transport="dj_cqrs.transport.RabbitMQTransport",
            url=URL,
            master={"publish_retries": 3, "publish_retry_delay": 0.5, **master},
        )
    )


def auth_error() -> Exception:
    return pika.exceptions.ProbableAuthenticationError(
        "ConnectionClosedByBroker: (403) 'ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN.'"
    )


# -- classifying pika errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        auth_error(),
        pika.exceptions.AuthenticationError("PLAIN"),
        pika.exceptions.ProbableAccessDeniedError("(530) 'NOT_ALLOWED - vhost billing not found'"),
        pika.exceptions.ConnectionClosedByBroker(530, "NOT_ALLOWED - access to vhost 'billing' refused"),
        pika.exceptions.ChannelClosedByBroker(403, "ACCESS_REFUSED - access to exchange 'cqrs' refused"),
    ],
)
def test_refusals_are_recognised(error):
    with rabbit():
        assert refusal_reason(error)


def test_a_refusal_wrapped_by_the_producer_is_recognised():
    closed = pika.exceptions.ChannelClosedByBroker(403, "ACCESS_REFUSED - no write permission")
    try:
        try:
            raise closed
        except pika.exceptions.ChannelClosedByBroker as exc:
            raise pika.exceptions.AMQPChannelError("channel closed before the confirms") from exc
    except pika.exceptions.AMQPChannelError as wrapped:
        with rabbit():
            assert "403 ACCESS_REFUSED" in (refusal_reason(wrapped) or "")


@pytest.mark.parametrize(
    "error",
    [
        pika.exceptions.AMQPConnectionError("Connection refused"),
        pika.exceptions.StreamLostError("lost"),
        pika.exceptions.ChannelClosedByBroker(404, "NOT_FOUND - no exchange 'cqrs'"),
        pika.exceptions.ConnectionClosedByBroker(320, "CONNECTION_FORCED - broker shutdown"),
        ConnectionResetError(),
    ],
)
def test_transient_failures_are_not_refusals(error):
    assert refusal_reason(error) is None


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (URL, "amqp://svc:***@broker.internal:5672/billing"),
        ("amqps://u:p%40ss@h/%2F?heartbeat=5", "amqps://u:***@h/%2F?heartbeat=5"),
        ("amqp://guest@h/", "amqp://guest@h/"),
        ("amqp://h", "amqp://h"),
    ],
)
def test_the_password_is_never_shown(url, shown):
    assert redact_password(url) == shown


def test_legacy_settings_are_shown_without_the_password():
    cqrs = cqrs_with(transport="dj_cqrs.transport.RabbitMQTransport", url=None, host="r", port=5673, user="svc", password="pw")
    with override_settings(CQRS=cqrs):
        assert display_url() == "amqp://svc@r:5673/"


# -- the RabbitMQ transport ------------------------------------------------------------------------


class Attempts:
    """``pika.BlockingConnection`` replaced: each call is an attempt, answered with ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.params: list[pika.ConnectionParameters] = []

    def __call__(self, params: pika.ConnectionParameters) -> Any:
        self.params.append(params)
        raise self.error


def publish(error: Exception, fail_fast: bool = False, **master: Any) -> tuple[Attempts, mock.MagicMock, BaseException]:
    attempts = Attempts(error)
    transport = RabbitMQTransport()
    with rabbit(**master), mock.patch("pika.BlockingConnection", attempts), mock.patch("time.sleep") as sleep:
        with pytest.raises(PublishFailed) as caught:
            transport.produce_many([payload(1), payload(2)], fail_fast=fail_fast)
    return attempts, sleep, caught.value


def test_wrong_password_raises_broker_refused_at_once(caplog):
    attempts, sleep, error = publish(auth_error())
    assert isinstance(error, BrokerRefused)
    assert len(attempts.params) == 1
    sleep.assert_not_called()
    assert error.url == "amqp://svc:***@broker.internal:5672/billing"
    assert "s3cret" not in str(error)
    assert "amqp://svc:***@broker.internal:5672/billing" in str(error)
    assert "user name and password" in str(error)
    assert "s3cret" not in caplog.text
    assert [r.levelname for r in caplog.records if "refused" in r.getMessage()] == ["ERROR"]


def test_vhost_refusal_raises_broker_refused_at_once():
    attempts, sleep, error = publish(pika.exceptions.ProbableAccessDeniedError("(530) 'NOT_ALLOWED - vhost billing not found'"))
    assert isinstance(error, BrokerRefused)
    assert "virtual host" in error.reason
    assert len(attempts.params) == 1
    sleep.assert_not_called()


def test_a_transient_failure_is_retried_with_sleeps():
    attempts, sleep, error = publish(pika.exceptions.AMQPConnectionError("Connection refused"))
    assert not isinstance(error, BrokerRefused)
    assert len(attempts.params) == 4  # publish_retries=3
    assert sleep.call_count == 3


def test_fail_fast_makes_one_attempt_without_sleeping():
    attempts, sleep, error = publish(pika.exceptions.AMQPConnectionError("Connection refused"), fail_fast=True)
    assert type(error) is PublishFailed
    assert len(attempts.params) == 1
    assert attempts.params[0].connection_attempts == 1
    sleep.assert_not_called()


def test_fail_fast_is_advertised():
    assert RabbitMQTransport.supports_fail_fast is True
    assert KombuTransport.supports_fail_fast is True
    assert BaseTransport.supports_fail_fast is False
    rabbit_transport = RabbitMQTransport()
    assert fail_fast_producer(rabbit_transport) is rabbit_transport
    assert fail_fast_producer(BaseTransport()) is None


# -- the frames the RabbitMQ transport writes ------------------------------------------------------


def pika_frames(channel: int, body_max: int, exchange: str, rk: str, body: bytes, props: pika.BasicProperties) -> bytes:
    frames = [
        pika.frame.Method(channel, pika.spec.Basic.Publish(exchange=exchange, routing_key=rk, mandatory=True)).marshal(),
        pika.frame.Header(channel, len(body), props).marshal(),
    ]
    for start in range(0, len(body), body_max):
        frames.append(pika.frame.Body(channel, body[start : start + body_max]).marshal())
    return b"".join(frames)


@pytest.mark.parametrize(
    ("body", "headers", "expiration"),
    [
        (b'{"a": 1}', None, None),
        (b"", None, None),
        ("é".encode() * 5000, None, None),  # split into several body frames
        (b"x" * 4088, {"x-cqrs-retries": 2, "x-cqrs-reason": "failed"}, "60000"),
    ],
)
def test_marshalled_frames_are_the_bytes_pika_writes(body, headers, expiration):
    marshaller = _Marshaller(7, 4088)
    props = message_properties(headers, expiration)
    encoded = None if headers is None and expiration is None else b"".join(props.encode())
    ours = marshaller.frames("cqrs", "cqrs.replica.é_model", body, encoded)
    assert ours == pika_frames(7, 4088, "cqrs", "cqrs.replica.é_model", body, props)
    assert marshaller.frames("cqrs", "cqrs.replica.é_model", body, encoded) == ours  # cached method frame


def test_a_name_pika_cannot_encode_is_left_to_pika():
    assert _Marshaller(1, 4088).frames("cqrs", "k" * 256, b"{}", None) is None


# -- kombu -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        amqp.exceptions.AccessRefused(403, "ACCESS_REFUSED - Login was refused"),
        amqp.exceptions.NotAllowed(530, "NOT_ALLOWED - vhost billing not found"),
    ],
)
def test_kombu_amqp_refusals(error):
    from kombu import Connection

    refusal = kombu_refused(error, Connection("amqp://svc:s3cret@h:5672/billing"))
    assert isinstance(refusal, BrokerRefused)
    assert "s3cret" not in str(refusal)
    assert "h:5672" in refusal.url


def test_kombu_redis_refusal_through_kombu_wrapping():
    import kombu.exceptions
    import redis.exceptions
    from kombu import Connection

    try:
        try:
            raise redis.exceptions.AuthenticationError("invalid username-password pair or user is disabled.")
        except redis.exceptions.AuthenticationError as exc:
            raise kombu.exceptions.OperationalError(str(exc)) from exc
    except kombu.exceptions.OperationalError as wrapped:
        assert isinstance(kombu_refused(wrapped, Connection("redis://u:pw@h:6379/0")), BrokerRefused)


def test_kombu_transient_failure_is_not_a_refusal():
    from kombu import Connection

    assert kombu_refused(ConnectionRefusedError(111, "Connection refused"), Connection("amqp://h//")) is None


def kombu_settings(**master: Any) -> Any:
    return override_settings(
        CQRS=cqrs_with(
            transport="dj_cqrs.transport.KombuTransport",
            url="amqp://svc:s3cret@127.0.0.1:1/billing",
            master={"publish_retries": 3, **master},
        )
    )


def test_kombu_refusal_is_raised_as_broker_refused():
    transport = KombuTransport()
    producer = mock.MagicMock()
    producer.publish.side_effect = amqp.exceptions.AccessRefused(403, "ACCESS_REFUSED - Login was refused")
    with kombu_settings(), mock.patch("kombu.connection.Connection.Producer", return_value=producer):
        with pytest.raises(BrokerRefused) as caught:
            transport.produce_many([payload()])
    assert "s3cret" not in str(caught.value)
    assert producer.publish.call_count == 1


@pytest.mark.parametrize("fail_fast", [False, True])
def test_kombu_fail_fast_publishes_without_retry(fail_fast):
    transport = KombuTransport()
    producer = mock.MagicMock()
    with (
        kombu_settings(),
        mock.patch("kombu.connection.Connection.Producer", return_value=producer),
        mock.patch("kombu.connection.Connection.ensure_connection") as connect,
        mock.patch("kombu.connection.Connection.connected", new_callable=mock.PropertyMock, return_value=False),
    ):
        transport.produce_many([payload()], fail_fast=fail_fast)
    assert producer.publish.call_args.kwargs["retry"] is (not fail_fast)
    assert connect.call_args_list == ([mock.call(max_retries=0)] if fail_fast else [])
