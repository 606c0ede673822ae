"""Transport methods called on the class, as django-cqrs's classmethods and staticmethods were
(issue 10, audit entry 3): ``RabbitMQTransport.clean_connection()`` in a post-fork hook,
``RabbitMQTransport.produce(payload)``, ``TransportMock.produce/consume``, ``BaseTransport.consumers``.
"""

from __future__ import annotations

import os
from typing import Any
from unittest import mock

import pytest
from django.test import override_settings

from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.transport import get_transport, reset_transport, set_transport
from dj_cqrs.transport.base import BaseTransport, live_instances
from dj_cqrs.transport.kombu import KombuTransport
from dj_cqrs.transport.mock import TransportMock
from dj_cqrs.transport.rabbit_mq import RabbitMQTransport, _ThreadProducer
from tests.unit.conftest import cqrs_with


def _payload(pk: int = 1) -> TransportPayload:
    return TransportPayload("SAVE", "simplest", {"id": pk, "cqrs_revision": 0}, pk)


class _FakeConnection:
    def __init__(self) -> None:
        self.closed = 0
        self.released = 0
        self.is_open = True

    def close(self) -> None:
        self.closed += 1
        self.is_open = False

    def release(self) -> None:
        self.released += 1


def _rabbit_with_connection(pid: int | None = None) -> tuple[RabbitMQTransport, _FakeConnection]:
    transport = RabbitMQTransport()
    producer = _ThreadProducer()
    connection = _FakeConnection()
    producer.connection = connection  # type: ignore[assignment]
    if pid is not None:
        producer.pid = pid
    transport._local.producer = producer
    return transport, connection


@pytest.fixture
def configured():
    set_transport(None)
    reset_transport()
    yield
    set_transport(None)
    reset_transport()


# -- TransportMock, BaseTransport --------------------------------------------------------------


def test_transport_mock_produce_and_consume_are_static_and_return_the_payload():
    payload = _payload()
    assert TransportMock.produce(payload) is payload
    assert TransportMock.consume(payload) is payload
    assert TransportMock.consume() is None
    assert TransportMock.consume(payload=payload, cqrs_ids=["a"]) is payload
    instance = TransportMock()
    assert instance.produce(payload) is payload
    assert instance.consume(cqrs_ids=None) is None


def test_transport_mock_still_publishes_one_by_one():
    assert TransportMock().publishes_in_batches() is False


def test_base_transport_consumers_is_an_empty_dict():
    assert BaseTransport.consumers == {}
    assert RabbitMQTransport.consumers == {}


def test_base_transport_clean_connection_is_a_no_op_on_the_instance_and_the_class():
    assert BaseTransport().clean_connection() is None
    assert BaseTransport.clean_connection() is None


def test_class_level_methods_compare_equal_so_batching_is_kept():
    assert RabbitMQTransport.produce == RabbitMQTransport.produce
    assert RabbitMQTransport().publishes_in_batches() is True
    assert KombuTransport().publishes_in_batches() is True

    class Sub(RabbitMQTransport):
        pass

    assert Sub().publishes_in_batches() is True


def test_a_patched_class_produce_still_turns_batching_off():
    with mock.patch.object(RabbitMQTransport, "produce") as produce:
        transport = RabbitMQTransport()
        assert transport.publishes_in_batches() is False
        transport.produce("x")
    produce.assert_called_once_with("x")
    assert RabbitMQTransport().publishes_in_batches() is True  # the descriptor is back


# -- clean_connection on the class -------------------------------------------------------------


def test_rabbit_clean_connection_on_the_class_closes_every_live_instance():
    first, first_conn = _rabbit_with_connection()
    second, second_conn = _rabbit_with_connection()
    RabbitMQTransport.clean_connection()
    assert (first_conn.closed, second_conn.closed) == (1, 1)
    assert first._local.producer is None and second._local.producer is None
    RabbitMQTransport.clean_connection()  # nothing left to close: no error
    assert (first_conn.closed, second_conn.closed) == (1, 1)


def test_rabbit_clean_connection_on_the_class_leaves_other_transports_alone():
    rabbit, rabbit_conn = _rabbit_with_connection()
    kombu = KombuTransport()
    kombu_conn = _FakeConnection()
    kombu._local.connection, kombu._local.pid = kombu_conn, os.getpid()

    RabbitMQTransport.clean_connection()
    assert rabbit_conn.closed == 1
    assert kombu._local.connection is kombu_conn and kombu_conn.released == 0

    KombuTransport.clean_connection()
    assert kombu_conn.released == 1
    assert kombu._local.connection is None


def test_base_clean_connection_on_the_class_reaches_every_transport():
    rabbit, rabbit_conn = _rabbit_with_connection()
    assert rabbit in live_instances(BaseTransport)
    BaseTransport.clean_connection()
    assert rabbit_conn.closed == 1


def test_dead_instances_are_forgotten():
    transport, _ = _rabbit_with_connection()
    ident = id(transport)
    del transport
    assert ident not in {id(t) for t in live_instances(RabbitMQTransport)}


def test_rabbit_connection_inherited_from_a_parent_process_is_dropped_without_a_close_frame():
    transport, connection = _rabbit_with_connection(pid=os.getpid() + 100000)
    RabbitMQTransport.clean_connection()
    assert connection.closed == 0  # Connection.Close would go out on the parent's socket
    assert transport._local.producer is None


def test_kombu_connection_inherited_from_a_parent_process_is_dropped_without_release():
    transport = KombuTransport()
    connection = _FakeConnection()
    transport._local.connection, transport._local.pid = connection, os.getpid() + 100000
    KombuTransport.clean_connection()
    assert connection.released == 0  # release() would close the parent's connection
    assert transport._local.connection is None


# -- produce / consume on the class ------------------------------------------------------------


def test_rabbit_produce_on_the_class_goes_through_the_configured_transport(configured):
    sent: list[Any] = []
    with override_settings(CQRS=cqrs_with(transport="dj_cqrs.transport.rabbit_mq.RabbitMQTransport")):
        current = get_transport()
        with mock.patch.object(RabbitMQTransport, "produce_many", lambda self, payloads: sent.append((self, list(payloads)))):
            payload = _payload()
            assert RabbitMQTransport.produce(payload) is None
    assert sent == [(current, [payload])]


def test_rabbit_produce_on_the_class_without_a_configured_rabbit_transport_uses_one_instance(configured):
    sent: list[Any] = []
    with mock.patch.object(RabbitMQTransport, "produce_many", lambda self, payloads: sent.append(self)):
        RabbitMQTransport.produce(_payload(1))
        RabbitMQTransport.produce(_payload(2))
    assert len(sent) == 2 and sent[0] is sent[1]
    assert isinstance(sent[0], RabbitMQTransport)
    assert not isinstance(get_transport(), RabbitMQTransport)


def test_kombu_consume_on_the_class_runs_the_instance_consumer(configured):
    seen: list[Any] = []
    with override_settings(CQRS=cqrs_with(transport="dj_cqrs.transport.kombu.KombuTransport")):
        with mock.patch("dj_cqrs.transport.kombu.KombuConsumer") as consumer:
            KombuTransport.consume(cqrs_ids=["a"])
            seen.append(get_transport())
    consumer.assert_called_once_with(seen[0], cqrs_ids=["a"], handler=None)
    consumer.return_value.run.assert_called_once_with()


def test_reset_transport_closes_the_instance_made_for_class_level_calls(configured):
    made: list[Any] = []
    with mock.patch.object(RabbitMQTransport, "produce_many", lambda self, payloads: made.append(self)):
        RabbitMQTransport.produce(_payload())
    (kept,) = made
    with mock.patch.object(RabbitMQTransport, "clean_connection") as clean:
        reset_transport()
    clean.assert_called_once_with()
    with mock.patch.object(RabbitMQTransport, "produce_many", lambda self, payloads: made.append(self)):
        RabbitMQTransport.produce(_payload())
    assert made[1] is not kept
