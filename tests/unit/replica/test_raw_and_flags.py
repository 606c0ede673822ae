"""``RawReplicaMixin`` / ``CQRS_NO_DB_OPERATIONS``, ``CQRS_META`` and ``CQRS_ONLY_DIRECT_SYNCS``."""

from __future__ import annotations

import pytest
from django.db import connection

from dj_cqrs.core.messages import Action
from dj_cqrs.metas import ReplicaMeta
from dj_cqrs.mixins import RawReplicaMixin
from dj_cqrs.registry import replica_registry
from tests.apps.master_app.models import FilteredModel, MetaModel
from tests.apps.replica_app.models import EventLog, OnlyDirectSyncModelRef
from tests.unit.replica.helpers import row, send

pytestmark = pytest.mark.django_db(transaction=True)


def test_raw_replica_gets_save_sync_delete_with_meta(transport):
    send(transport, "SAVE", row(1, 0, name="a"), "meta_model", previous_data={"name": None}, meta={"m": 1})
    send(transport, "SYNC", row(1, 0, name="a"), "meta_model", meta={"m": 2})
    send(transport, "DELETE", {"id": 1, "cqrs_revision": 1, "cqrs_updated": "x"}, "meta_model", meta={"m": 3})

    assert [(kind, data["id"], previous, sync, meta) for kind, data, previous, sync, meta in EventLog.events] == [
        ("save", 1, {"name": None}, False, {"m": 1}),
        ("save", 1, None, True, {"m": 2}),
        ("delete", 1, None, False, {"m": 3}),
    ]
    assert all(o.action is Action.ACK for o in transport.outcomes)


def test_master_meta_reaches_the_raw_replica_end_to_end(transport):
    MetaModel.objects.create(name="x")
    transport.join(fail_fast=True)
    [(kind, data, previous, sync, meta)] = EventLog.events
    assert (kind, data["name"], sync, meta) == ("save", "x", False, {"signal": "SAVE", "name": "x"})


class NoMetaHandler(RawReplicaMixin):
    """``CQRS_META`` False: ``meta`` must not be passed (the signature has no such argument)."""

    CQRS_ID = "no_meta_handler"
    seen: list = []

    @classmethod
    def cqrs_save(cls, master_data, previous_data=None, sync=False):
        cls.seen.append(("save", master_data["id"], sync, connection.in_atomic_block))
        return True

    @classmethod
    def cqrs_delete(cls, master_data):
        cls.seen.append(("delete", master_data["id"], False, connection.in_atomic_block))
        return True


class DbHandler(NoMetaHandler):
    CQRS_ID = "db_handler"
    CQRS_NO_DB_OPERATIONS = False


@pytest.fixture
def handlers(isolated_registries):
    NoMetaHandler.seen = []
    assert ReplicaMeta.register(NoMetaHandler) is NoMetaHandler
    ReplicaMeta.register(DbHandler)
    yield
    assert replica_registry.get_model_by_cqrs_id("no_meta_handler") is NoMetaHandler


def test_no_db_operations_runs_outside_a_transaction_and_without_meta(transport, handlers):
    send(transport, "SAVE", row(1, 0), "no_meta_handler", meta={"ignored": True})
    send(transport, "DELETE", {"id": 1}, "no_meta_handler", meta={"ignored": True})
    send(transport, "SYNC", row(2, 0), "db_handler", meta={"ignored": True})

    assert NoMetaHandler.seen == [
        ("save", 1, False, False),
        ("delete", 1, False, False),
        ("save", 2, True, True),  # CQRS_NO_DB_OPERATIONS=False: inside the apply transaction
    ]
    assert all(o.action is Action.ACK for o in transport.outcomes)


def test_only_direct_syncs_applies_direct_syncs_and_ignores_broadcasts(transport):
    obj = FilteredModel.objects.create(name="created")
    transport.join(fail_fast=True)
    assert OnlyDirectSyncModelRef.objects.get(pk=obj.pk).name == "created"

    FilteredModel.objects.filter(pk=obj.pk).update(name="drifted")
    obj.cqrs_sync()  # broadcast
    obj.cqrs_sync(queue="another_service")
    transport.join(fail_fast=True)
    assert [o.status for o in transport.outcomes[-2:]] == ["ignored_broadcast_sync"] * 2
    assert OnlyDirectSyncModelRef.objects.get(pk=obj.pk).name == "created"

    obj.cqrs_sync(queue="replica")  # this service's queue
    transport.join(fail_fast=True)
    assert transport.outcomes[-1].status == "applied"
    assert OnlyDirectSyncModelRef.objects.get(pk=obj.pk).name == "drifted"


def test_only_direct_syncs_still_applies_saves_and_deletes(transport):
    obj = FilteredModel.objects.create(name="a")
    obj.name = "b"
    obj.save()
    transport.join(fail_fast=True)
    assert OnlyDirectSyncModelRef.objects.get(pk=obj.pk).name == "b"
    obj.delete()
    transport.join(fail_fast=True)
    assert not OnlyDirectSyncModelRef.objects.exists()


def test_a_retried_direct_sync_keeps_its_target_queue(transport):
    from tests.apps.replica_app.models import FlakyModelRef

    FlakyModelRef.fail_times = 1
    send(transport, "SYNC", row(3, 0, name="x"), "simplest_flaky", queue="replica")

    assert [(o.action, o.payload.queue) for o in transport.outcomes] == [
        (Action.RETRY, "replica"),
        (Action.ACK, "replica"),
    ]
    assert transport.published[0].routing_key == "cqrs.replica.simplest_flaky"
