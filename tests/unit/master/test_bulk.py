"""``Model.cqrs.bulk_create`` / ``bulk_update`` and the custom signals behind them."""

from __future__ import annotations

import pytest
from django.db import transaction

from dj_cqrs.signals import post_bulk_create, post_update
from tests.apps.master_app.models import BasicFieldsModel, Publisher, SimplestModel, TrackedModel
from tests.apps.replica_app.models import SimplestModelRef
from tests.unit.conftest import bodies

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def received():
    calls = []

    def on_bulk_create(sender, instances, using, **kwargs):
        calls.append(("post_bulk_create", sender, [i.pk for i in instances], using))

    def on_update(sender, instances, using, **kwargs):
        calls.append(("post_update", sender, [i.pk for i in instances], using))

    post_bulk_create.connect(on_bulk_create, weak=False, dispatch_uid="test_bulk_create")
    post_update.connect(on_update, weak=False, dispatch_uid="test_update")
    yield calls
    post_bulk_create.disconnect(dispatch_uid="test_bulk_create")
    post_update.disconnect(dispatch_uid="test_update")


def test_bulk_create_publishes_one_save_per_object(transport, received):
    created = SimplestModel.cqrs.bulk_create([SimplestModel(name="a"), SimplestModel(name="b")])

    assert all(obj.pk is not None for obj in created)
    assert [(b["signal_type"], b["instance_pk"], b["instance_data"]["name"], b["instance_data"]["cqrs_revision"]) for b in bodies(transport)] == [
        ("SAVE", created[0].pk, "a", 0),
        ("SAVE", created[1].pk, "b", 0),
    ]
    assert received == [("post_bulk_create", SimplestModel, [o.pk for o in created], "default")]
    transport.join(fail_fast=True)
    assert sorted(SimplestModelRef.objects.values_list("name", flat=True)) == ["a", "b"]


def test_bulk_create_tracks_previous_data(transport):
    publisher = Publisher.objects.create(name="p")
    TrackedModel.cqrs.bulk_create([TrackedModel(status="x", owner=publisher), TrackedModel(status="y")])
    assert [b["previous_data"] for b in bodies(transport)] == [{"status": None, "owner_id": None}, {"status": None}]


def test_bulk_create_inside_a_transaction_publishes_on_commit(transport):
    with transaction.atomic():
        SimplestModel.cqrs.bulk_create([SimplestModel(name="a")])
        assert transport.published == []
    assert len(transport.published) == 1


def test_bulk_update_bumps_each_row_once_and_publishes_the_new_state(transport, received):
    first = SimplestModel.objects.create(name="a")
    second = SimplestModel.objects.create(name="b")
    untouched = SimplestModel.objects.create(name="c")
    transport.reset()

    count = SimplestModel.cqrs.bulk_update(SimplestModel.objects.filter(pk__in=[first.pk, second.pk]), name="z")

    assert count == 2
    assert sorted((b["instance_pk"], b["instance_data"]["name"], b["instance_data"]["cqrs_revision"]) for b in bodies(transport)) == [
        (first.pk, "z", 1),
        (second.pk, "z", 1),
    ]
    assert SimplestModel.objects.get(pk=untouched.pk).cqrs_revision == 0
    assert [(name, sender) for name, sender, _, _ in received] == [("post_update", SimplestModel)]
    assert sorted(received[0][2]) == sorted([first.pk, second.pk])


def test_bulk_update_previous_data_holds_every_tracked_value(transport):
    publisher = Publisher.objects.create(name="p")
    obj = TrackedModel.objects.create(status="old", owner=publisher)
    BasicFieldsModel.objects.create(int_field=1, char_field="x")
    transport.reset()

    TrackedModel.cqrs.bulk_update(TrackedModel.objects.all(), other="changed")
    BasicFieldsModel.cqrs.bulk_update(BasicFieldsModel.objects.all(), char_field="y")

    tracked, basic = bodies(transport)
    assert tracked["instance_pk"] == obj.pk
    assert tracked["previous_data"] == {"status": "old", "owner": publisher.pk}
    assert basic["previous_data"]["char_field"] == "x"
    assert basic["previous_data"]["cqrs_revision"] == 0
    assert basic["instance_data"]["char_field"] == "y"


def test_bulk_update_when_the_filter_equals_the_new_values(transport):
    SimplestModel.objects.create(name="a")
    transport.reset()
    assert SimplestModel.cqrs.bulk_update(SimplestModel.objects.filter(name="a"), name="b") == 1
    assert len(transport.published) == 1


def test_bulk_update_of_nothing(transport, received):
    assert SimplestModel.cqrs.bulk_update(SimplestModel.objects.none(), name="b") == 0
    assert transport.published == []
    assert received == []


def test_call_post_bulk_create_and_call_post_update_publish_given_instances(transport, received):
    rows = SimplestModel.objects.bulk_create([SimplestModel(name="a"), SimplestModel(name="b")])
    assert transport.published == []  # plain Django bulk_create is not captured

    SimplestModel.call_post_bulk_create(rows, using="default")
    SimplestModel.objects.filter(pk=rows[0].pk).update(name="changed", cqrs_revision=1)
    SimplestModel.call_post_update(list(SimplestModel.objects.filter(pk=rows[0].pk)))

    assert [(b["instance_data"]["name"], b["instance_data"]["cqrs_revision"]) for b in bodies(transport)] == [
        ("a", 0),
        ("b", 0),
        ("changed", 1),
    ]
    assert [name for name, *_ in received] == ["post_bulk_create", "post_update"]
