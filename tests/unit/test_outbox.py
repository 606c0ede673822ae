"""The transactional outbox on SQLite with the in-memory transport (publishing is synchronous)."""

from __future__ import annotations

import logging

import pytest
from django.db import transaction
from django.test import override_settings

from dj_cqrs.exceptions import PublishFailed
from dj_cqrs.master.relay import Relay
from dj_cqrs.models import OutboxEvent
from tests.apps.master_app.models import SimplestModel, TrackedModel, UUIDPkModel
from tests.apps.replica_app.models import SimplestModelRef

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "other"])


def _settings(**master):
    from django.conf import settings

    cqrs = dict(settings.CQRS)
    cqrs["master"] = {**cqrs.get("master", {}), **master}
    return override_settings(CQRS=cqrs)


def test_event_is_written_with_the_change_and_published_after_commit(transport):
    with transaction.atomic():
        obj = SimplestModel.objects.create(name="a")
        row = OutboxEvent.objects.get()
        assert (row.cqrs_id, row.signal_type, row.object_pk, row.revision) == ("simplest", "SAVE", str(obj.pk), 0)
        assert row.published_at is None
        assert transport.published == []
    row.refresh_from_db()
    assert row.published_at is not None
    assert [m.data["instance_data"]["name"] for m in transport.published] == ["a"]


def test_rolled_back_change_leaves_no_event(transport):
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            SimplestModel.objects.create(name="a")
            raise RuntimeError("rollback")
    assert OutboxEvent.objects.count() == 0
    assert transport.published == []


def test_savepoint_rollback_discards_only_its_events(transport):
    with transaction.atomic():
        kept = SimplestModel.objects.create(name="kept")
        try:
            with transaction.atomic():
                SimplestModel.objects.create(name="gone")
                raise RuntimeError
        except RuntimeError:
            pass
    assert [m.data["instance_data"]["name"] for m in transport.published] == ["kept"]
    assert OutboxEvent.objects.filter(published_at__isnull=True).count() == 0
    assert kept.cqrs_revision == 0


def test_failed_publish_keeps_the_event_and_the_relay_delivers_it(transport, caplog):
    transport.fail_with = ConnectionError("broker down")
    with caplog.at_level(logging.WARNING, logger="django-cqrs.outbox"):
        obj = SimplestModel.objects.create(name="a")  # does not raise: the event is in the outbox
    row = OutboxEvent.objects.get()
    assert row.published_at is None and row.attempts == 1 and "broker down" in row.last_error
    assert "stay in the outbox" in caplog.text
    assert [r.levelname for r in caplog.records if "stay in the outbox" in r.getMessage()] == ["WARNING"]
    transport.fail_with = None
    assert Relay(min_age=0).run_once() == 1
    assert transport.published[0].data["instance_pk"] == obj.pk
    assert OutboxEvent.objects.get().published_at is not None
    transport.join(fail_fast=True)
    assert SimplestModelRef.objects.get(pk=obj.pk).name == "a"


def test_sweep_on_a_later_commit_heals_without_a_relay(transport):
    transport.fail_with = ConnectionError("broker down")
    first = SimplestModel.objects.create(name="first")
    transport.fail_with = None
    with _settings(outbox_grace=0, outbox_sweep_interval=0):
        SimplestModel.objects.create(name="second")
    names = sorted(m.data["instance_data"]["name"] for m in transport.published)
    assert names == ["first", "second"]
    assert OutboxEvent.objects.filter(published_at__isnull=True).count() == 0
    assert first.pk


def test_outbox_off_raises_on_a_failed_publish(transport):
    transport.fail_with = ConnectionError("broker down")
    with _settings(CQRS_OUTBOX=False):
        with pytest.raises(PublishFailed):
            SimplestModel.objects.create(name="a")
        assert SimplestModel.objects.filter(name="a").exists()  # committed, and the caller knows
    assert OutboxEvent.objects.count() == 0


def test_one_row_per_object_per_transaction_with_merged_previous_data(transport):
    obj = TrackedModel.objects.create(status="new", other="x")
    transport.reset()
    with transaction.atomic():
        obj.status = "paid"
        obj.save()
        again = TrackedModel.objects.get(pk=obj.pk)
        again.status = "shipped"
        again.save()
    rows = OutboxEvent.objects.filter(signal_type="SAVE").order_by("id")
    assert rows.count() == 2  # the create, and one for the transaction
    assert [m.data["instance_data"]["status"] for m in transport.published] == ["shipped"]
    assert transport.published[0].data["previous_data"] == {"status": "new"}
    assert transport.published[0].data["instance_data"]["cqrs_revision"] == 1


def test_delete_payload_captured_at_change_time(transport):
    obj = UUIDPkModel.objects.create(name="u")
    pk = obj.pk
    obj.delete()
    row = OutboxEvent.objects.get(signal_type="DELETE")
    assert row.object_pk == str(pk)
    delete = transport.published[-1].data
    assert delete["signal_type"] == "DELETE"
    assert delete["instance_data"]["id"] == str(pk)
    assert delete["instance_data"]["cqrs_revision"] == 1


def test_bulk_operations_write_rows_in_bulk(transport, django_assert_max_num_queries):
    objs = [SimplestModel(name=f"n{i}") for i in range(50)]
    with django_assert_max_num_queries(12):
        SimplestModel.cqrs.bulk_create(objs)
    assert OutboxEvent.objects.count() == 50
    assert len(transport.published) == 50
    SimplestModel.cqrs.bulk_update(SimplestModel.objects.all(), name="same")
    assert OutboxEvent.objects.count() == 100
    assert {m.data["instance_data"]["cqrs_revision"] for m in transport.published[50:]} == {1}


def test_relay_prunes_published_rows_and_alerts_on_old_ones(transport, caplog):
    SimplestModel.objects.create(name="a")
    transport.fail_with = ConnectionError("down")
    SimplestModel.objects.create(name="b")
    OutboxEvent.objects.update(created_at="2000-01-01T00:00:00Z")
    OutboxEvent.objects.filter(published_at__isnull=False).update(published_at="2000-01-01T00:00:00Z")
    with _settings(outbox_retention=60, outbox_alert_age=60), caplog.at_level(logging.ERROR, logger="django-cqrs.relay"):
        relay = Relay(min_age=0)
        relay.housekeeping()
    assert "unpublished event" in caplog.text
    assert OutboxEvent.objects.count() == 1  # the published one was pruned
    transport.fail_with = None
    assert relay.run_once() == 1


def test_outbox_row_lives_in_the_database_of_the_change(transport):
    with transaction.atomic(using="other"):
        SimplestModel.objects.using("other").create(name="elsewhere")
        assert OutboxEvent.objects.using("other").count() == 1
        assert transport.published == []
    assert OutboxEvent.objects.using("default").count() == 0
    assert OutboxEvent.objects.using("other").get().published_at is not None
    assert transport.published[0].data["instance_data"]["name"] == "elsewhere"
