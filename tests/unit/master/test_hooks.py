"""Per-model hooks and global functions: meta, correlation ids, ``to_cqrs_dict``, ``cqrs_sync``."""

from __future__ import annotations

import pytest
from django.db import transaction

from dj_cqrs.correlation import correlation_scope, get_correlation_id
from tests.apps.master_app import hooks
from tests.apps.master_app.models import (
    FilteredModel,
    MetaModel,
    NoProduceModel,
    SimplestModel,
    TrackedModel,
)
from tests.apps.replica_app.models import EventLog, SimplestModelRef
from tests.unit.conftest import cqrs_settings_and_transport

pytestmark = pytest.mark.django_db(transaction=True)


def test_get_cqrs_meta_override_is_sent_and_reaches_a_meta_replica(transport):
    obj = MetaModel.objects.create(name="m")
    obj.delete()

    save, delete = (m.data for m in transport.published)
    assert save["meta"] == {"signal": "SAVE", "name": "m"}
    assert delete["meta"] == {"signal": "DELETE", "name": "m"}

    transport.join(fail_fast=True)
    assert [(kind, meta) for kind, _, _, _, meta in EventLog.events] == [
        ("save", {"signal": "SAVE", "name": "m"}),
        ("delete", {"signal": "DELETE", "name": "m"}),
    ]


def test_meta_function_callable_gets_the_documented_kwargs():
    received = []

    def meta_function(**kwargs):
        received.append({**kwargs, "obj_pk": kwargs["obj"].pk})
        return {"n": len(received)}

    with cqrs_settings_and_transport(master={"meta_function": meta_function}) as transport:
        obj = TrackedModel.objects.create(status="s")
        pk = obj.pk
        obj.delete()

    assert [m.data["meta"] for m in transport.published] == [{"n": 1}, {"n": 2}]
    save_kwargs, delete_kwargs = received
    assert set(save_kwargs) == {"obj", "obj_pk", "instance_data", "previous_data", "signal_type"}
    assert save_kwargs["obj_pk"] == pk
    assert save_kwargs["signal_type"] == "SAVE"
    assert save_kwargs["previous_data"] == {"status": None}
    assert save_kwargs["instance_data"]["status"] == "s"
    assert set(delete_kwargs) == {"obj", "obj_pk", "instance_data", "signal_type"}  # DELETE: no previous_data
    assert delete_kwargs["instance_data"]["id"] == pk


def test_meta_function_dotted_path():
    path = "tests.apps.master_app.hooks.meta_function"
    with cqrs_settings_and_transport(master={"meta_function": path}) as transport:
        SimplestModel.objects.create(name="a")
    assert transport.published[0].data["meta"] == {"from": "dotted path", "signal": "SAVE"}
    assert len(hooks.calls) == 1


def test_meta_function_none_sends_an_empty_object(transport):
    SimplestModel.objects.create(name="a")
    assert transport.published[0].data["meta"] == {}


def test_correlation_function_gets_signal_cqrs_id_pk_and_queue():
    path = "tests.apps.master_app.hooks.correlation_function"
    with cqrs_settings_and_transport(master={"correlation_function": path}) as transport:
        obj = SimplestModel.objects.create(name="a")
        obj.cqrs_sync(queue="replica_b")
        pk = obj.pk
        obj.delete()
        assert get_correlation_id("SYNC", "simplest", 5, None) == "SYNC:simplest:5:None"

    assert [m.data["correlation_id"] for m in transport.published] == [
        f"SAVE:simplest:{pk}:None",
        f"SYNC:simplest:{pk}:replica_b",
        f"DELETE:simplest:{pk}:None",
    ]


def test_correlation_function_callable_returning_none():
    with cqrs_settings_and_transport(master={"correlation_function": lambda *args: None}) as transport:
        SimplestModel.objects.create(name="a")
    assert transport.published[0].data["correlation_id"] is None


def test_correlation_scope_is_used_without_a_function(transport):
    with correlation_scope("request-42"):
        SimplestModel.objects.create(name="a")
    SimplestModel.objects.create(name="b")
    assert [m.data["correlation_id"] for m in transport.published] == ["request-42", None]


def test_to_cqrs_dict_is_the_instance_data(transport):
    obj = SimplestModel.objects.create(name="a")
    obj.name = "b"
    obj.save()
    assert obj.to_cqrs_dict() == transport.published[-1].data["instance_data"]


def test_to_cqrs_dict_resolves_pending_expressions(transport):
    from django.db.models import F

    obj = SimplestModel.objects.create(name="a")
    SimplestModel.objects.filter(pk=obj.pk).update(cqrs_revision=5)
    obj.cqrs_revision = F("cqrs_revision") + 1
    data = obj.to_cqrs_dict()
    assert data["cqrs_revision"] == 5  # the stored value, not an expression
    assert obj.cqrs_revision == 5


def test_cqrs_sync_returns_false_for_an_unsaved_instance(transport):
    assert SimplestModel(name="new").cqrs_sync() is False
    assert transport.published == []


def test_cqrs_sync_returns_false_when_the_row_is_gone(transport):
    obj = SimplestModel.objects.create(name="a")
    SimplestModel.objects.filter(pk=obj.pk).delete()  # queryset delete: the instance keeps its pk
    transport.reset()
    assert obj.cqrs_sync() is False
    assert transport.published == []


def test_cqrs_sync_returns_false_when_filtered_or_not_produced(transport):
    assert FilteredModel.objects.create(name="skip").cqrs_sync() is False
    assert NoProduceModel.objects.create(name="x").cqrs_sync() is False
    assert transport.published == []


def test_cqrs_sync_sends_the_stored_state(transport):
    obj = SimplestModel.objects.create(name="stored")
    transport.join(fail_fast=True)
    SimplestModel.objects.filter(pk=obj.pk).update(name="changed behind the ORM")
    obj.name = "unsaved in memory"

    assert obj.cqrs_sync() is True
    body = transport.published[-1].data
    assert body["signal_type"] == "SYNC"
    assert body["instance_data"]["name"] == "changed behind the ORM"
    assert body["instance_data"]["cqrs_revision"] == 0
    transport.join(fail_fast=True)
    assert SimplestModelRef.objects.get(pk=obj.pk).name == "changed behind the ORM"


def test_cqrs_sync_inside_a_transaction_goes_out_on_commit(transport):
    obj = SimplestModel.objects.create(name="a")
    transport.reset()
    with transaction.atomic():
        assert obj.cqrs_sync() is True
        assert transport.published == []
    assert [m.data["signal_type"] for m in transport.published] == ["SYNC"]


def test_cqrs_sync_of_a_tracked_model_sends_empty_previous_data(transport):
    obj = TrackedModel.objects.create(status="a")
    obj.cqrs_sync()
    assert transport.published[-1].data["previous_data"] == {}
