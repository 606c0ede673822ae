"""Deletes that stay deleted, on SQLite through the in-memory transport."""

from __future__ import annotations

import datetime

import pytest
from django.test import override_settings
from django.utils import timezone

from dj_cqrs.models import Tombstone
from dj_cqrs.replica import tombstones
from tests.apps.master_app.models import BasicFieldsModel, SimplestModel
from tests.apps.replica_app.models import BasicFieldsModelRef, SimplestModelRef

pytestmark = pytest.mark.django_db(transaction=True)


def deliver(transport, messages):
    transport.messages.extend(messages)
    transport.join(fail_fast=True)


def test_late_save_after_delete_is_ignored(transport):
    obj = SimplestModel.objects.create(name="v0")
    obj.name = "v1"
    obj.save()
    pk = obj.pk
    obj.delete()
    create, update, delete = transport.published
    transport.messages.clear()
    deliver(transport, [create, delete, update])
    assert not SimplestModelRef.objects.filter(pk=pk).exists()
    stone = Tombstone.objects.get(cqrs_id="simplest")
    assert (stone.object_pk, stone.revision) == (str(pk), 2)
    ignored = [o for o in transport.outcomes if o.status == "ignored_deleted"]
    assert len(ignored) == 1 and ignored[0].payload.revision == 1


def test_broadcast_sync_older_than_the_delete_is_ignored_but_a_direct_one_applies(transport):
    obj = SimplestModel.objects.create(name="x")
    obj.cqrs_sync()
    obj.cqrs_sync(queue="replica")
    pk = obj.pk
    SimplestModel.objects.filter(pk=pk).first().delete()
    create, broadcast, direct, delete = transport.published
    transport.messages.clear()
    deliver(transport, [create, delete, broadcast])
    assert not SimplestModelRef.objects.filter(pk=pk).exists()
    deliver(transport, [direct])
    assert SimplestModelRef.objects.filter(pk=pk).exists()
    assert not Tombstone.objects.exists()


def test_recreated_object_continues_revisions_and_wins_over_a_late_delete(transport):
    BasicFieldsModel.objects.create(int_field=5, char_field="first")
    BasicFieldsModel.objects.get(pk=5).delete()
    again = BasicFieldsModel.objects.create(int_field=5, char_field="second")
    assert again.cqrs_revision == 2  # above the DELETE's revision 1
    create1, delete, create2 = transport.published
    transport.messages.clear()
    deliver(transport, [create1, create2, delete])  # the DELETE arrives last
    ref = BasicFieldsModelRef.objects.get(pk=5)
    assert (ref.char_field, ref.cqrs_revision) == ("second", 2)
    transport.messages.clear()
    BasicFieldsModelRef.objects.all().delete()
    deliver(transport, [create1, delete, create2])  # in order
    assert BasicFieldsModelRef.objects.get(pk=5).char_field == "second"


def _save_body(pk, revision, updated, name):
    return {
        "signal_type": "SAVE",
        "cqrs_id": "simplest",
        "instance_data": {"id": pk, "name": name, "cqrs_revision": revision, "cqrs_updated": str(updated)},
        "instance_pk": pk,
        "previous_data": None,
        "correlation_id": None,
        "retries": 0,
        "expires": None,
        "meta": {},
    }


def test_recreation_from_a_master_whose_revisions_restart_is_recognised_by_time(transport):
    from dj_cqrs import encoding

    now = timezone.now()
    deliver_raw = lambda body: transport.send_raw(encoding.dumps_bytes(body), "simplest")  # noqa: E731
    deliver_raw(_save_body(9, 0, now - datetime.timedelta(minutes=5), "old"))
    deliver_raw({**_save_body(9, 3, now - datetime.timedelta(minutes=1), ""), "signal_type": "DELETE",
                 "instance_data": {"id": 9, "cqrs_revision": 3, "cqrs_updated": str(now - datetime.timedelta(minutes=1))}})
    deliver_raw(_save_body(9, 2, now - datetime.timedelta(minutes=2), "late"))
    transport.join(fail_fast=True)
    assert not SimplestModelRef.objects.filter(pk=9).exists()
    deliver_raw(_save_body(9, 0, now, "reborn"))
    transport.join(fail_fast=True)
    assert SimplestModelRef.objects.get(pk=9).name == "reborn"


def test_tombstones_are_pruned_after_the_horizon(transport):
    obj = SimplestModel.objects.create(name="x")
    obj.delete()
    transport.join(fail_fast=True)
    Tombstone.objects.update(recorded_at=timezone.now() - datetime.timedelta(days=8))
    assert tombstones.prune(7 * 86400) == 1
    assert not Tombstone.objects.exists()


def test_tombstones_can_be_switched_off(transport):
    from django.conf import settings

    cqrs = {**settings.CQRS, "replica": {**settings.CQRS["replica"], "tombstone_horizon": None}}
    with override_settings(CQRS=cqrs):
        obj = SimplestModel.objects.create(name="x")
        obj.delete()
        transport.join(fail_fast=True)
    assert not Tombstone.objects.exists()
