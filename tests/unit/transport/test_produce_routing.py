"""Which path committed events take to the transport (issue 10, gap 4).

django-cqrs users test their master services by patching ``dj_cqrs.controller.producer.produce``
(or a transport's ``produce``) and asserting on its calls; custom transports may implement only
``produce``. Each committed event must then reach the patched function once, in the committing
thread, at commit, whatever transport is configured.
"""

from __future__ import annotations

import threading
from unittest import mock

import pytest
from django.db import transaction
from django.test import override_settings

from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.master.dispatcher import dispatcher
from dj_cqrs.master.publisher import publishes_in_batches
from dj_cqrs.models import OutboxEvent
from dj_cqrs.transport import get_transport, reset_transport, set_transport
from dj_cqrs.transport.base import BaseTransport
from dj_cqrs.transport.mock import TransportMock
from dj_cqrs.transport.rabbit_mq import RabbitMQTransport
from tests.apps.master_app.models import SimplestModel
from tests.unit.conftest import cqrs_with

pytestmark = pytest.mark.django_db(transaction=True)

RABBIT = "dj_cqrs.transport.rabbit_mq.RabbitMQTransport"
# A port nothing listens on: a publish that reached the real RabbitMQ transport would fail.
NOWHERE = "amqp://guest:guest@127.0.0.1:9/%2F"


@pytest.fixture
def configured():
    """Use the transport named by the settings (not the unit tests' explicit memory transport)."""
    set_transport(None)
    reset_transport()
    yield
    set_transport(None)
    reset_transport()


def _saved_in_a_transaction(calls, threads):
    with transaction.atomic():
        obj = SimplestModel.objects.create(name="a")
        obj.name = "b"
        obj.save()
        SimplestModel.objects.create(name="c")
        assert calls == []  # nothing before the commit
    return obj


@pytest.mark.parametrize("transport", [RABBIT, "dj_cqrs.transport.mock.TransportMock", "dj_cqrs.transport.memory.MemoryTransport"])
def test_patched_controller_produce_sees_each_committed_event_in_the_committing_thread(configured, transport):
    calls: list[TransportPayload] = []
    threads: list[int] = []

    def record(payload):
        calls.append(payload)
        threads.append(threading.get_ident())

    with override_settings(CQRS=cqrs_with(transport=transport, url=NOWHERE)):
        with mock.patch("dj_cqrs.controller.producer.produce", side_effect=record) as produce:
            obj = _saved_in_a_transaction(calls, threads)
            assert produce.call_count == 2
    assert [(p.signal_type, p.pk, p.instance_data["name"]) for p in calls] == [("SAVE", obj.pk, "b"), ("SAVE", obj.pk + 1, "c")]
    assert all(isinstance(p, TransportPayload) for p in calls)
    assert set(threads) == {threading.get_ident()}
    assert not OutboxEvent.objects.filter(published_at__isnull=True).exists()


def test_patched_rabbitmq_produce_sees_the_publishes(configured):
    with override_settings(CQRS=cqrs_with(transport=RABBIT, url=NOWHERE)):
        with mock.patch.object(RabbitMQTransport, "produce") as produce:
            assert not publishes_in_batches(get_transport())
            SimplestModel.objects.create(name="x")
            SimplestModel.objects.get(name="x").delete()
    assert [call.args[0].signal_type for call in produce.call_args_list] == ["SAVE", "DELETE"]
    assert not OutboxEvent.objects.filter(published_at__isnull=True).exists()


def test_patched_transport_mock_produce_sees_the_publishes(configured):
    with override_settings(CQRS=cqrs_with(transport="dj_cqrs.transport.mock.TransportMock")):
        with mock.patch.object(TransportMock, "produce") as produce:
            SimplestModel.objects.create(name="x")
    assert produce.call_count == 1
    assert produce.call_args.args[0].instance_data["name"] == "x"


class ProduceOnly(BaseTransport):
    """A master-only custom transport, django-cqrs style: a static ``produce`` and nothing else."""

    sent: list[tuple[str, int]] = []

    @staticmethod
    def produce(payload):
        ProduceOnly.sent.append((payload.signal_type, threading.get_ident()))


class ConsumeOnly(BaseTransport):
    @staticmethod
    def consume(*args, **kwargs):
        return "consumed"


def test_a_transport_implementing_only_produce_publishes_in_the_committing_thread(configured):
    ProduceOnly.sent = []
    with override_settings(CQRS=cqrs_with(transport=f"{__name__}.ProduceOnly", master={"outbox_publish": "thread"})):
        transport = get_transport()
        assert isinstance(transport, ProduceOnly)
        assert dispatcher.mode("default") == "sync"
        SimplestModel.objects.create(name="x")
    assert ProduceOnly.sent == [("SAVE", threading.get_ident())]
    with pytest.raises(NotImplementedError, match="cannot consume"):
        transport.consume()
    only_consume = ConsumeOnly()
    assert only_consume.consume() == "consumed"
    with pytest.raises(NotImplementedError, match="cannot publish"):
        only_consume.produce(None)


class Batching(BaseTransport):
    """Batches, but does not opt in to the background thread."""

    batches: list[int] = []

    def produce(self, payload):
        self.produce_many([payload])

    def produce_many(self, payloads):
        Batching.batches.append(len(list(payloads)))


def test_third_party_transports_publish_from_no_background_thread_unless_they_opt_in(configured):
    Batching.batches = []
    with override_settings(CQRS=cqrs_with(transport=f"{__name__}.Batching", master={"outbox_publish": "thread"})):
        assert publishes_in_batches(get_transport())
        assert dispatcher.mode() == "sync"
        with transaction.atomic():
            SimplestModel.objects.create(name="a")
            SimplestModel.objects.create(name="b")
    assert Batching.batches == [2]


def test_our_broker_transports_batch_and_may_use_the_thread(configured):
    with override_settings(CQRS=cqrs_with(transport=RABBIT, url=NOWHERE)):
        transport = get_transport()
        assert publishes_in_batches(transport)
        assert dispatcher.mode() == "thread"
        with mock.patch.object(transport, "produce_many"):
            assert not publishes_in_batches(transport)
        with mock.patch("dj_cqrs.controller.producer.produce"):
            assert not publishes_in_batches(transport)
            assert dispatcher.mode() == "sync"
        assert publishes_in_batches(transport)
