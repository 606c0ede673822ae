"""``RawMasterMixin`` + ``MasterMeta.register``, the legacy registry names, and the admin action."""

from __future__ import annotations

import pytest
from django.test import override_settings
from django.contrib.admin.sites import site
from django.contrib import messages
from django.contrib.messages import get_messages

from dj_cqrs.master.mixins import MasterMeta
from dj_cqrs.metas import MasterMeta as LegacyMasterMeta
from dj_cqrs.registries import MasterRegistry, ReplicaRegistry
from dj_cqrs.registry import master_registry
from tests.apps.master_app.models import RawMaster, SimplestModel
from tests.apps.replica_app.models import EventLog, SimplestModelRef
from tests.unit.conftest import cqrs_with

pytestmark = pytest.mark.django_db(transaction=True)


def test_raw_master_registered_by_hand_publishes(transport):
    assert LegacyMasterMeta is MasterMeta
    assert MasterRegistry.get_model_by_cqrs_id("raw_master") is RawMaster
    assert master_registry.get_model_by_cqrs_id("raw_master") is RawMaster

    obj = RawMaster.objects.create(name="raw")
    obj.name = "raw 2"
    obj.save()
    obj.cqrs_sync()

    assert [(m.routing_key, m.data["signal_type"], m.data["instance_data"]["cqrs_revision"]) for m in transport.published] == [
        ("raw_master", "SAVE", 0),
        ("raw_master", "SAVE", 1),
        ("raw_master", "SYNC", 1),
    ]


def test_register_is_idempotent_and_returns_the_class(transport):
    assert MasterMeta.register(RawMaster) is RawMaster
    RawMaster.objects.create(name="once")
    assert len(transport.published) == 1  # signals are not connected twice


def test_legacy_registry_facades():
    assert MasterRegistry.models["simplest"] is SimplestModel
    assert ReplicaRegistry.get_model_by_cqrs_id("simplest") is SimplestModelRef
    assert ReplicaRegistry.get_model_by_cqrs_id("meta_model") is EventLog
    assert ReplicaRegistry.get_model_by_cqrs_id("no_such_id") is None


def test_admin_action_is_offered_and_syncs_the_selected_rows(transport, admin_client):
    first = SimplestModel.objects.create(name="a")
    second = SimplestModel.objects.create(name="b")
    SimplestModel.objects.create(name="not selected")
    transport.reset()

    changelist = "/admin/master_app/simplestmodel/"
    page = admin_client.get(changelist)
    assert page.status_code == 200
    assert b"sync_items" in page.content
    assert b"Synchronize selected simplest models via CQRS" in page.content

    response = admin_client.post(
        changelist, {"action": "sync_items", "_selected_action": [first.pk, second.pk]}, follow=True
    )

    assert response.status_code == 200
    assert sorted((m.data["signal_type"], m.data["instance_pk"]) for m in transport.published) == [
        ("SYNC", first.pk),
        ("SYNC", second.pk),
    ]
    assert [str(m) for m in get_messages(response.wsgi_request)] == ["2 successfully synced. 0 failed: []"]


def test_admin_action_reports_failures(transport, rf):
    from django.contrib.messages.storage.fallback import FallbackStorage

    kept = SimplestModel.objects.create(name="kept")
    gone = SimplestModel.objects.create(name="gone")
    admin = site._registry[SimplestModel]
    request = rf.post("/")
    request.session = {}
    request._messages = FallbackStorage(request)
    queryset = list(SimplestModel.objects.order_by("pk"))
    SimplestModel.objects.filter(pk=gone.pk).delete()
    transport.reset()

    admin.sync_items(request, queryset)  # instances loaded before the row was deleted

    assert [m.data["instance_pk"] for m in transport.published] == [kept.pk]
    assert [(m.level, str(m)) for m in request._messages] == [
        (messages.INFO, f"1 successfully synced. 1 failed: [<SimplestModel: SimplestModel object ({gone.pk})>]")
    ]


def test_admin_action_counts_a_failed_publish_as_failed(transport, rf):
    from django.contrib.messages.storage.fallback import FallbackStorage

    obj = SimplestModel.objects.create(name="a")
    admin = site._registry[SimplestModel]
    request = rf.post("/")
    request.session = {}
    request._messages = FallbackStorage(request)
    transport.fail_with = ConnectionError("broker down")

    with override_settings(CQRS=cqrs_with(master={"CQRS_OUTBOX": False})):
        admin.sync_items(request, SimplestModel.objects.filter(pk=obj.pk))

    assert [str(m) for m in request._messages] == [
        f"0 successfully synced. 1 failed: [<SimplestModel: SimplestModel object ({obj.pk})>]"
    ]


def test_admin_action_is_offered_on_the_change_list_only(transport, admin_client):
    obj = SimplestModel.objects.create(name="a")

    change_form = admin_client.get(f"/admin/master_app/simplestmodel/{obj.pk}/change/")

    assert change_form.status_code == 200
    assert b"sync_items" not in change_form.content  # Django 6.1 change-form actions: not this one
    assert b"sync_items" in admin_client.get("/admin/master_app/simplestmodel/").content
