"""Less common master paths: delete/re-create, rolled-back deletes, raw saves, legacy facades."""

from __future__ import annotations

import json

import pytest
from django.core import serializers
from django.db import connection, models, transaction
from django.db.models import F

from dj_cqrs.signals import MasterSignals
from tests.apps.master_app.models import SimplestModel
from tests.unit.conftest import bodies

pytestmark = pytest.mark.django_db(transaction=True)


def signals_and_revisions(transport):
    return [(b["signal_type"], b["instance_data"]["cqrs_revision"]) for b in bodies(transport)]


def test_save_then_delete_in_one_transaction_sends_only_the_delete(transport):
    obj = SimplestModel.objects.create(name="a")
    transport.reset()
    with transaction.atomic():
        obj.name = "b"
        obj.save()
        obj.delete()
    assert signals_and_revisions(transport) == [("DELETE", 2)]


def test_delete_then_recreate_in_one_transaction_sends_delete_then_save(transport):
    obj = SimplestModel.objects.create(id=50, name="a")
    obj.save()
    transport.reset()
    with transaction.atomic():
        obj.delete()
        SimplestModel.objects.create(id=50, name="again")
    # The re-created object continues after the DELETE's revision (replicas that remember the
    # deletion then accept it).
    assert signals_and_revisions(transport) == [("DELETE", 2), ("SAVE", 3)]
    assert bodies(transport)[1]["instance_data"]["name"] == "again"


def test_delete_rolled_back_with_a_savepoint_sends_nothing(transport):
    obj = SimplestModel.objects.create(name="a")
    other = SimplestModel.objects.create(name="other")
    transport.reset()
    with transaction.atomic():
        other.delete()
        try:
            with transaction.atomic():
                SimplestModel.objects.get(pk=obj.pk).delete()
                raise RuntimeError("savepoint rollback")
        except RuntimeError:
            pass
    assert SimplestModel.objects.filter(pk=obj.pk).exists()
    assert signals_and_revisions(transport) == [("DELETE", 1)]


def test_sync_then_save_in_one_transaction(transport):
    obj = SimplestModel.objects.create(name="a")
    transport.reset()
    with transaction.atomic():
        obj.cqrs_sync()
        obj.name = "b"
        obj.save()
    # Both are serialized at commit: the sync carries the committed state too (the replica then
    # sees the SAVE as a duplicate of the sync).
    assert signals_and_revisions(transport) == [("SYNC", 1), ("SAVE", 1)]


def test_positional_save_arguments_are_understood(transport):
    obj = SimplestModel.objects.create(name="a")
    obj.name = "b"
    obj.save(False, False, None, ["name"])  # force_insert, force_update, using, update_fields
    assert SimplestModel.objects.get(pk=obj.pk).name == "b"
    assert len(transport.published) == 1


def test_delete_with_a_pending_expression_uses_the_stored_revision(transport):
    obj = SimplestModel.objects.create(name="a")
    SimplestModel.objects.filter(pk=obj.pk).update(cqrs_revision=4)
    obj.cqrs_revision = F("cqrs_revision") + 1
    obj.delete()
    assert signals_and_revisions(transport)[-1] == ("DELETE", 5)


def test_raw_saves_like_loaddata_publish_without_a_bump(transport):
    obj = SimplestModel.objects.create(name="a")
    fixture = json.loads(serializers.serialize("json", [obj]))
    fixture[0]["fields"]["name"] = "loaded"
    fixture[0]["fields"]["cqrs_revision"] = 7
    transport.reset()

    for item in serializers.deserialize("json", json.dumps(fixture)):
        item.save()

    assert SimplestModel.objects.get(pk=obj.pk).cqrs_revision == 7
    assert signals_and_revisions(transport) == [("SAVE", 7)]
    assert bodies(transport)[0]["instance_data"]["name"] == "loaded"


def test_raw_update_fields_save_without_the_revision_publishes_nothing(transport):
    obj = SimplestModel.objects.create(name="a")
    transport.reset()
    obj.name = "b"
    models.Model.save_base(obj, update_fields=["name"])
    assert transport.published == []
    models.Model.save_base(obj, update_fields=["name", "cqrs_revision"])
    assert len(transport.published) == 1


def test_master_signals_facade(transport):
    obj = SimplestModel.objects.create(name="a")
    transport.reset()
    MasterSignals.register_model(SimplestModel)  # idempotent
    MasterSignals.post_save(SimplestModel, instance=obj, created=False, using="default")
    MasterSignals.post_bulk_create(SimplestModel, instances=[obj], using="default")
    MasterSignals.post_bulk_update(SimplestModel, instances=[obj], using="default")
    with connection.cursor() as cursor:  # the row goes away behind the ORM's back
        cursor.execute(f"DELETE FROM {SimplestModel._meta.db_table} WHERE id = %s", [obj.pk])
    MasterSignals.post_delete(SimplestModel, instance=obj, using="default")
    assert [b["signal_type"] for b in bodies(transport)] == ["SAVE", "SAVE", "SAVE", "DELETE"]
