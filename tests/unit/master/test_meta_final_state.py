"""``get_cqrs_meta()`` / ``master.meta_function``: the signal type of a sync, and meta built from
the final state of an object saved several times in one transaction (as django-cqrs builds it at
commit)."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.db.models import F
from django.test.utils import CaptureQueriesContext

from dj_cqrs.master import payloads
from dj_cqrs.master.outbox import store
from dj_cqrs.models import OutboxEvent
from tests.apps.master_app.models import CounterModel, MetaModel, SimplestModel, TrackedModel
from tests.unit.conftest import cqrs_settings_and_transport

pytestmark = pytest.mark.django_db(transaction=True)


def _recording_meta(received):
    def meta_function(**kwargs):
        received.append(kwargs)
        data = kwargs["instance_data"]
        return {"sig": str(kwargs["signal_type"]), "data": data.get("status", data.get("count"))}

    return meta_function


def _row_meta(cqrs_id, pk):
    rows = store.read_rows(OutboxEvent.objects.filter(cqrs_id=cqrs_id, object_pk=str(pk)).order_by("id"))
    return [payload.meta for _, payload in payloads.payloads_for_rows(rows, "default") if payload is not None]


def test_meta_of_a_sync_is_built_with_signal_type_sync():
    received = []
    with cqrs_settings_and_transport(master={"meta_function": _recording_meta(received)}) as transport:
        obj = TrackedModel.objects.create(status="s")
        received.clear()
        assert obj.cqrs_sync(queue="q") is True

    (sync,) = [m.data for m in transport.published if m.data["signal_type"] == "SYNC"]
    assert sync["meta"] == {"sig": "SYNC", "data": "s"}
    assert [str(kw["signal_type"]) for kw in received] == ["SYNC"]
    assert received[0]["obj"] is obj
    assert received[0]["instance_data"]["status"] == "s"


def test_meta_override_of_a_sync_gets_sync(transport):
    obj = MetaModel.objects.create(name="m")
    obj.cqrs_sync()
    assert [m.data["meta"] for m in transport.published] == [
        {"signal": "SAVE", "name": "m"},
        {"signal": "SYNC", "name": "m"},
    ]


def test_meta_of_an_object_saved_twice_in_a_transaction_is_built_from_its_final_state(transport):
    with transaction.atomic():
        obj = MetaModel.objects.create(name="first")
        obj.name = "second"
        obj.save()

    (body,) = [m.data for m in transport.published]
    assert body["instance_data"]["name"] == "second"
    assert body["meta"] == {"signal": "SAVE", "name": "second"}
    # The outbox row (what the relay publishes after a failed immediate publish) says the same.
    assert _row_meta("meta_model", obj.pk) == [{"signal": "SAVE", "name": "second"}]


def test_meta_function_sees_the_final_instance_data_and_previous_data():
    received = []
    with cqrs_settings_and_transport(master={"meta_function": _recording_meta(received)}) as transport:
        with transaction.atomic():
            obj = TrackedModel.objects.create(status="first")
            obj.status = "second"
            obj.save()

    (body,) = [m.data for m in transport.published]
    assert body["meta"] == {"sig": "SAVE", "data": "second"}
    last = received[-1]
    assert last["obj"] is obj
    assert last["instance_data"]["status"] == "second"
    assert last["previous_data"] == body["previous_data"]
    assert body["previous_data"]["status"] is None
    assert _row_meta("tracked", obj.pk) == [{"sig": "SAVE", "data": "second"}]


def test_meta_after_expression_updates_in_a_transaction_reads_the_stored_values():
    received = []
    with cqrs_settings_and_transport(master={"meta_function": _recording_meta(received)}) as transport:
        obj = CounterModel.objects.create()
        with transaction.atomic():
            obj.count = F("count") + 1
            obj.save()
            obj.count = F("count") + 5
            obj.save()

    last = transport.published[-1].data
    assert last["instance_data"]["count"] == 6
    assert last["meta"] == {"sig": "SAVE", "data": 6}
    assert _row_meta("counter", obj.pk)[-1] == {"sig": "SAVE", "data": 6}


def test_unchanged_meta_does_not_rewrite_the_outbox_row():
    with cqrs_settings_and_transport(master={"meta_function": lambda **kw: {"constant": True}}):
        with transaction.atomic():
            obj = SimplestModel.objects.create(name="a")
            obj.name = "b"
            with CaptureQueriesContext(connection) as queries:
                obj.save()
    assert not [q["sql"] for q in queries.captured_queries if "dj_cqrs_outbox" in q["sql"]]


def test_no_meta_hook_means_no_extra_work_on_a_later_save(transport):
    with transaction.atomic():
        obj = SimplestModel.objects.create(name="a")
        obj.name = "b"
        with CaptureQueriesContext(connection) as queries:
            obj.save()
    assert len(queries.captured_queries) == 1  # the UPDATE of the row, nothing for the outbox
    assert transport.published[0].data["meta"] == {}
