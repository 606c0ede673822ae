"""Events emitted inside an audit context carry ``meta["audit"]``; outside, nothing changes."""

from __future__ import annotations

import json

import pytest
from django.db import transaction
from django.test import override_settings

from dj_cqrs import audit, events
from dj_cqrs.events import registry
from dj_cqrs.master.relay import Relay
from dj_cqrs.models import OutboxEvent
from dj_cqrs.testing import use_memory_transport
from tests.apps.master_app.models import MetaModel, SimplestModel, TrackedModel
from tests.apps.replica_app.models import SimplestModelRef
from tests.unit.conftest import cqrs_settings_and_transport, cqrs_with

pytestmark = pytest.mark.django_db(transaction=True)

WHO = {"user_id": 3, "username": "ann", "request_id": "r-1"}


def _rows(cqrs_id):
    return [
        json.loads(d)
        for d in OutboxEvent.objects.filter(cqrs_id=cqrs_id)
        .order_by("id")
        .values_list("data", flat=True)
    ]


def test_without_a_context_the_outbox_data_and_the_message_are_unchanged(transport):
    obj = SimplestModel.objects.create(name="a")
    (data,) = OutboxEvent.objects.filter(cqrs_id="simplest").values_list("data", flat=True)
    assert data == '{"correlation_id":null,"meta":{},"previous_data":null}'
    (message,) = transport.published
    assert message.data["meta"] == {} and b"audit" not in message.body
    obj.delete()
    assert all("audit" not in m.data["meta"] for m in transport.published)


def test_save_update_and_delete_carry_the_audit_values(transport):
    with audit.context(**WHO):
        obj = SimplestModel.objects.create(name="a")
        obj.name = "b"
        obj.save()
        pk = obj.pk
        obj.delete()
    assert [m.data["signal_type"] for m in transport.published] == ["SAVE", "SAVE", "DELETE"]
    assert [m.data["meta"] for m in transport.published] == [{"audit": WHO}] * 3
    assert [r["meta"] for r in _rows("simplest")] == [{"audit": WHO}] * 3
    transport.join(fail_fast=True)
    assert not SimplestModelRef.objects.filter(pk=pk).exists()


def test_changes_in_one_transaction_and_tracked_models(transport):
    with audit.context(**WHO), transaction.atomic():
        obj = TrackedModel.objects.create(status="s")
        obj.status = "t"
        obj.save()
    (message,) = transport.published
    assert message.data["meta"] == {"audit": WHO}


def test_bulk_create_and_bulk_update_carry_the_audit_values(transport):
    with audit.context(**WHO):
        created = SimplestModel.cqrs.bulk_create([SimplestModel(name="a"), SimplestModel(name="b")])
        SimplestModel.cqrs.bulk_update(
            SimplestModel.objects.filter(pk__in=[o.pk for o in created]), name="z"
        )
    assert len(transport.published) == 4
    assert all(m.data["meta"] == {"audit": WHO} for m in transport.published)
    assert all(r["meta"] == {"audit": WHO} for r in _rows("simplest"))


def test_bulk_writes_without_a_context_are_unchanged(transport):
    created = SimplestModel.cqrs.bulk_create([SimplestModel(name="a")])
    SimplestModel.cqrs.bulk_update(SimplestModel.objects.filter(pk=created[0].pk), name="z")
    assert [m.data["meta"] for m in transport.published] == [{}, {}]


def test_a_meta_function_result_is_kept_and_audit_added():
    def meta_function(**kwargs):
        return {"tenant": "t1"}

    with cqrs_settings_and_transport(master={"meta_function": meta_function}) as transport:
        with audit.context(**WHO):
            SimplestModel.objects.create(name="a")
        SimplestModel.objects.create(name="b")
    assert [m.data["meta"] for m in transport.published] == [
        {"tenant": "t1", "audit": WHO},
        {"tenant": "t1"},
    ]


def test_the_users_own_audit_key_wins():
    with cqrs_settings_and_transport(
        master={"meta_function": lambda **kw: {"audit": "mine"}}
    ) as transport:
        with audit.context(**WHO):
            SimplestModel.objects.create(name="a")
    assert transport.published[0].data["meta"] == {"audit": "mine"}


def test_get_cqrs_meta_override_is_kept(transport):
    with audit.context(**WHO):
        MetaModel.objects.create(name="m")
    assert transport.published[0].data["meta"] == {"signal": "SAVE", "name": "m", "audit": WHO}


def test_sync_carries_the_audit_values(transport):
    obj = SimplestModel.objects.create(name="a")
    with audit.context(job="resync"):
        obj.cqrs_sync()
    assert [m.data["meta"] for m in transport.published] == [{}, {"audit": {"job": "resync"}}]


def test_without_the_outbox_the_direct_path_carries_them_too():
    with cqrs_settings_and_transport(master={"CQRS_OUTBOX": False}) as transport:
        with audit.context(**WHO):
            obj = SimplestModel.objects.create(name="a")
            obj.delete()
        SimplestModel.objects.create(name="b")
    assert [m.data["meta"] for m in transport.published] == [{"audit": WHO}, {"audit": WHO}, {}]


def test_meta_is_captured_at_change_time_and_the_relay_publishes_it_later():
    with (
        override_settings(CQRS=cqrs_with(master={"outbox_publish": "relay"})),
        use_memory_transport() as transport,
    ):
        with audit.context(**WHO):
            SimplestModel.objects.create(name="a")
        assert transport.published == []
        assert audit.current() is None
        assert Relay(min_age=0).run_once() == 1
    assert transport.published[0].data["meta"] == {"audit": WHO}


def test_domain_events_carry_the_audit_values():
    with (
        override_settings(CQRS=cqrs_with(master={"outbox_publish": "sync"})),
        use_memory_transport() as transport,
    ):
        events.emit("order.paid", 1, {"a": 1})
        with audit.context(**WHO):
            events.emit("order.paid", 2, {"a": 1})
            events.emit("order.paid", 3, {"a": 1}, meta={"by": "me"})
            events.emit("order.paid", 4, {"a": 1}, meta={"audit": "mine"})
    assert [e.meta for e in transport.events] == [
        None,
        {"audit": WHO},
        {"by": "me", "audit": WHO},
        {"audit": "mine"},
    ]
    assert b"audit" not in transport.published[0].body


def test_a_domain_event_handler_sees_the_audit_values():
    seen = []
    events.handler("audit.*", name="audit_test_handler")(lambda event: seen.append(event.meta))
    try:
        with (
            override_settings(CQRS=cqrs_with(master={"outbox_publish": "sync"})),
            use_memory_transport() as transport,
        ):
            with audit.context(**WHO):
                events.emit("audit.done", 1, {})
            transport.join(fail_fast=True)
    finally:
        registry.unregister("audit_test_handler")
    assert seen == [{"audit": WHO}]
