"""``CQRS_TRACKED_FIELDS`` → ``previous_data``."""

from __future__ import annotations

import pytest
from django.db import transaction

from tests.apps.master_app.models import BasicFieldsModel, Publisher, SimplestModel, TrackedModel
from tests.apps.replica_app.models import MappedModelRef

pytestmark = pytest.mark.django_db(transaction=True)


def previous(transport, index=-1):
    return transport.published[index].data["previous_data"]


def test_create_reports_none_for_every_tracked_field_that_is_set(transport):
    TrackedModel.objects.create(status="new")
    publisher = Publisher.objects.create(name="p")
    TrackedModel.objects.create(status="new", owner=publisher)

    assert previous(transport, 0) == {"status": None}  # owner is None: not reported
    assert previous(transport, 1) == {"status": None, "owner_id": None}  # on create: the attname


def test_update_reports_the_old_values_of_changed_fields_only(transport):
    first = Publisher.objects.create(name="first")
    second = Publisher.objects.create(name="second")
    obj = TrackedModel.objects.create(status="new", owner=first)

    obj.status = "done"
    obj.other = "untracked change"
    obj.save()
    assert previous(transport) == {"status": "new"}

    obj.owner = second
    obj.save()
    assert previous(transport) == {"owner": first.pk}  # FK under the field name, raw id

    obj.save()
    assert previous(transport) == {}


def test_loaded_instances_are_tracked_too(transport):
    obj = TrackedModel.objects.create(status="new")
    loaded = TrackedModel.objects.get(pk=obj.pk)
    loaded.status = "loaded"
    loaded.save()
    assert previous(transport) == {"status": "new"}


def test_several_saves_in_one_transaction_keep_the_first_old_values(transport):
    obj = TrackedModel.objects.create(status="new")
    with transaction.atomic():
        obj.status = "a"
        obj.save()
        obj.status = "b"
        obj.save()
    assert len(transport.published) == 2
    assert previous(transport) == {"status": "new"}
    assert transport.published[-1].data["instance_data"]["status"] == "b"


def test_all_tracks_cqrs_revision_but_not_cqrs_updated(transport):
    obj = BasicFieldsModel.objects.create(int_field=1, char_field="x")
    assert previous(transport) == {"int_field": None, "char_field": None, "cqrs_revision": None}

    obj.char_field = "y"
    obj.save()
    assert previous(transport) == {"char_field": "x", "cqrs_revision": 0}


def test_untracked_models_send_null(transport):
    obj = SimplestModel.objects.create(name="a")
    obj.save()
    assert [m.data["previous_data"] for m in transport.published] == [None, None]


def test_get_tracked_fields_data_is_what_the_last_save_captured(transport):
    obj = TrackedModel(status="new")
    assert obj.get_tracked_fields_data() is None  # nothing saved yet
    obj.save()
    assert obj.get_tracked_fields_data() == previous(transport) == {"status": None}
    obj.status = "changed"
    assert obj.get_tracked_fields_data() == {"status": None}  # until the next save
    obj.save()
    assert obj.get_tracked_fields_data() == previous(transport) == {"status": "new"}
    assert TrackedModel.objects.get(pk=obj.pk).get_tracked_fields_data() is None
    untracked = SimplestModel(name="x")
    untracked.save()
    assert untracked.get_tracked_fields_data() is None


def test_previous_data_is_mapped_on_the_replica(transport):
    obj = TrackedModel.objects.create(status="new")
    obj.status = "done"
    obj.save()
    transport.join(fail_fast=True)

    ref = MappedModelRef.objects.get(ext_id=obj.pk)
    assert ref.state == "done"
    assert ref.last_previous == {"state": "new"}
