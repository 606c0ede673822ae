"""``MemoryTransport`` and the publish path around it (``publish``, ``controller.producer``)."""

from __future__ import annotations

import logging

import pytest
from django.db import transaction

from dj_cqrs.controller.consumer import consume
from dj_cqrs.controller.producer import produce
from dj_cqrs.core.messages import Action
from dj_cqrs.core.names import routing_key_for
from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.exceptions import PublishFailed
from dj_cqrs.testing import use_memory_transport
from dj_cqrs.transport import get_transport, set_transport
from dj_cqrs.transport.base import BaseTransport
from dj_cqrs.transport.memory import DeadLetterError
from tests.apps.master_app.models import SimplestModel
from tests.apps.replica_app.models import SimplestModelRef
from tests.unit.conftest import cqrs_with
from tests.unit.replica.helpers import row

pytestmark = pytest.mark.django_db(transaction=True)


def payload(pk=1, revision=0, **kwargs):
    return TransportPayload("SAVE", "simplest", row(pk, revision, name=f"n{pk}"), pk, **kwargs)


def test_use_memory_transport_installs_and_removes_it():
    with use_memory_transport() as memory:
        assert get_transport() is memory
    assert get_transport() is not memory


def test_produce_stores_encoded_messages_until_join(transport):
    transport.produce(payload(1))
    transport.produce(payload(2, queue="replica"))
    assert [m.routing_key for m in transport.messages] == ["simplest", "cqrs.replica.simplest"]
    assert transport.published == transport.messages
    assert [p.pk for p in transport.payloads] == [1, 2]
    assert transport.payloads[1].queue == "replica"

    assert transport.join() == 2
    assert transport.messages == []
    assert len(transport.published) == 2  # the publish log is kept
    assert sorted(SimplestModelRef.objects.values_list("pk", flat=True)) == [1, 2]
    assert transport.join() == 0


def test_routing_key():
    assert routing_key_for(payload()) == "simplest"
    assert routing_key_for(payload(queue="q")) == "cqrs.q.simplest"


def test_join_fail_fast_raises_on_a_dead_letter(transport):
    transport.send_raw(b"not json")
    with pytest.raises(DeadLetterError, match="invalid_json"):
        transport.join(fail_fast=True)
    assert len(transport.dead_letters) == 1


def test_join_gives_up_after_max_rounds(transport, isolated_registries):
    from django.db import OperationalError

    from dj_cqrs.metas import ReplicaMeta
    from dj_cqrs.mixins import RawReplicaMixin

    class Down(RawReplicaMixin):
        CQRS_ID = "down"

        @classmethod
        def cqrs_save(cls, master_data, previous_data=None, sync=False):
            raise OperationalError("could not connect to server")

    ReplicaMeta.register(Down)
    transport.produce(TransportPayload("SAVE", "down", row(1, 0), 1))
    with pytest.raises(RuntimeError, match="did not settle after 3 rounds"):
        transport.join(max_rounds=3)
    assert [o.action for o in transport.outcomes] == [Action.REQUEUE] * 3


def test_reset_forgets_everything(transport):
    transport.produce(payload())
    transport.send_raw(b"x")
    transport.join()
    transport.fail_with = RuntimeError("x")
    transport.reset()
    assert (transport.messages, transport.published, transport.dead_letters, transport.outcomes) == ([], [], [], [])
    assert transport.fail_with is None


def test_consume_is_join(transport):
    transport.produce(payload())
    transport.consume()
    assert SimplestModelRef.objects.filter(pk=1).exists()


def test_a_failed_publish_raises_after_the_commit_without_the_outbox(transport):
    transport.fail_with = ConnectionError("broker down")
    with outbox_off(), pytest.raises(PublishFailed, match="broker down"):
        SimplestModel.objects.create(name="committed")
    assert SimplestModel.objects.filter(name="committed").exists()  # the data is committed
    assert transport.published == []


def outbox_off():
    """With the outbox on, a failed publish leaves the event in the outbox (see test_outbox.py)."""
    from django.test import override_settings

    return override_settings(CQRS=cqrs_with(master={"CQRS_OUTBOX": False}))


class ExplodingTransport(BaseTransport):
    def produce(self, payload):
        raise RuntimeError("driver error")

    def consume(self, *args, **kwargs):
        return None


def test_an_error_of_a_custom_transport_becomes_publish_failed(caplog):
    set_transport(ExplodingTransport())
    try:
        with outbox_off(), caplog.at_level(logging.ERROR, logger="django-cqrs"):
            with pytest.raises(PublishFailed, match="publishing 1 CQRS message"):
                with transaction.atomic():
                    SimplestModel.objects.create(name="x")
    finally:
        set_transport(None)
    assert [r.getMessage() for r in caplog.records] == ["CQRS publish failed"]
    assert caplog.records[0].cqrs_id == "simplest"


def test_controller_produce_and_consume(transport):
    produce(payload(5))
    assert [m.data["instance_pk"] for m in transport.published] == [5]
    assert consume(payload(6)).name == "n6"
    assert SimplestModelRef.objects.get(pk=6).cqrs_revision == 0
