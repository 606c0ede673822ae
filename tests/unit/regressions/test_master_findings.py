"""Reviewer reproductions (master side). Each test asserts the CORRECT behaviour; a failure
demonstrates the defect."""
from __future__ import annotations

import pytest
from django.conf import settings
from django.db import transaction, IntegrityError
from django.test import override_settings

from dj_cqrs.models import OutboxEvent
from tests.apps.master_app.models import SimplestModel, TrackedModel
from tests.apps.replica_app.models import SimplestModelRef

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "other"])


def _master(**master):
    cqrs = dict(settings.CQRS)
    cqrs["master"] = {**cqrs.get("master", {}), **master}
    return override_settings(CQRS=cqrs)


def test_save_after_rolled_back_savepoint_save_does_not_crash(transport):
    obj = SimplestModel.objects.create(name="a")
    with transaction.atomic():
        SimplestModel.objects.create(name="other")  # any earlier event in the same transaction
        try:
            with transaction.atomic():          # e.g. a get_or_create / IntegrityError guard
                obj.name = "b"
                obj.save()
                raise IntegrityError("simulated")
        except IntegrityError:
            pass
        obj.name = "c"
        obj.save()                              # crashes: OutboxEvent.DoesNotExist in update_data
    transport.join(fail_fast=True)
    assert SimplestModelRef.objects.get(pk=obj.pk).name == "c"


def test_update_fields_save_publishes_only_stored_values(transport):
    obj = SimplestModel.objects.create(name="stored")
    obj.name = "never-saved"
    obj.save(update_fields=["cqrs_revision"])   # publish=True (cqrs_revision named) but name not written
    stored = SimplestModel.objects.get(pk=obj.pk)
    assert stored.name == "stored"
    last = transport.published[-1].data["instance_data"]
    assert last["name"] == stored.name, f"published {last['name']!r}, master row holds {stored.name!r}"


def test_update_fields_with_update_cqrs_fields_publishes_stored_values(transport):
    obj = SimplestModel.objects.create(name="stored")
    obj.name = "never-saved"
    obj.save(update_fields=[], update_cqrs_fields=True)  # a "touch": bump + publish
    stored = SimplestModel.objects.get(pk=obj.pk)
    last = transport.published[-1].data["instance_data"]
    assert last["name"] == stored.name, f"published {last['name']!r}, master row holds {stored.name!r}"


def test_no_outbox_save_then_rolled_back_delete_still_publishes_the_save(transport):
    obj = SimplestModel.objects.create(name="a")
    transport.published.clear()
    with _master(CQRS_OUTBOX=False):
        with transaction.atomic():
            obj.name = "b"
            obj.save()
            try:
                with transaction.atomic():
                    SimplestModel.objects.get(pk=obj.pk).delete()
                    raise RuntimeError("undo the delete")
            except RuntimeError:
                pass
    assert SimplestModel.objects.get(pk=obj.pk).name == "b"
    names = [m.data["instance_data"].get("name") for m in transport.published]
    assert names == ["b"], f"published after commit: {names}"


def test_outbox_save_then_rolled_back_delete_publishes_the_save_at_commit(transport):
    obj = SimplestModel.objects.create(name="a")
    transport.published.clear()
    with transaction.atomic():
        obj.name = "b"
        obj.save()
        try:
            with transaction.atomic():
                SimplestModel.objects.get(pk=obj.pk).delete()
                raise RuntimeError("undo the delete")
        except RuntimeError:
            pass
    names = [m.data["instance_data"].get("name") for m in transport.published]
    pending = OutboxEvent.objects.filter(published_at__isnull=True).count()
    assert names == ["b"] and pending == 0, f"published at commit: {names}; rows left pending: {pending}"


def test_save_of_a_new_instance_with_an_existing_pk_does_not_rewind_the_revision(transport):
    obj = SimplestModel.objects.create(name="a")
    for name in "bcd":
        obj.name = name
        obj.save()
    assert SimplestModel.objects.get(pk=obj.pk).cqrs_revision == 3
    SimplestModel(pk=obj.pk, name="replaced").save()       # Django: UPDATE of the existing row
    master = SimplestModel.objects.get(pk=obj.pk)
    transport.join()
    replica = SimplestModelRef.objects.get(pk=obj.pk)
    assert replica.name == master.name, f"replica {replica.name!r} rev {replica.cqrs_revision}, master {master.name!r} rev {master.cqrs_revision}"


@pytest.mark.parametrize("same_transaction", [False, True])
def test_delete_then_recreate_with_the_same_autofield_pk_reaches_the_replica(transport, same_transaction):
    obj = SimplestModel.objects.create(name="old")
    pk = obj.pk
    transport.join()
    if same_transaction:
        with transaction.atomic():
            obj.delete()
            SimplestModel.objects.create(id=pk, name="new")
    else:
        obj.delete()
        SimplestModel.objects.create(id=pk, name="new")   # e.g. "replace" / restore of a record
    transport.join()
    master = SimplestModel.objects.get(pk=pk)
    replica = SimplestModelRef.objects.filter(pk=pk).first()
    assert replica is not None and replica.name == "new", (
        f"master rev {master.cqrs_revision} {master.name!r}; replica {replica and (replica.cqrs_revision, replica.name)}")


def test_bulk_create_ignore_conflicts_does_not_publish_rows_that_were_not_written(transport):
    SimplestModel.objects.create(id=77, name="stored")
    transport.join()
    SimplestModel.cqrs.bulk_create([SimplestModel(id=77, name="ignored-by-the-db")], ignore_conflicts=True)
    transport.join()
    master = SimplestModel.objects.get(pk=77)
    replica = SimplestModelRef.objects.get(pk=77)
    assert replica.name == master.name, f"replica {replica.name!r}, master {master.name!r}"


def test_sqlite_outbox_id_reuse_after_savepoint_rollback_does_not_touch_another_event(transport):
    from tests.apps.master_app.models import Publisher
    owner = Publisher.objects.create(id=1, name="p") if hasattr(Publisher, "name") else Publisher.objects.create(id=1)
    a = TrackedModel.objects.create(status="a0")
    b = TrackedModel.objects.create(status="b0")
    transport.published.clear()
    with transaction.atomic():
        TrackedModel.objects.create(status="first")          # the transaction's event set exists
        try:
            with transaction.atomic():
                a.status = "a1"
                a.save()                                     # outbox row N, rolled back below
                raise IntegrityError("simulated")
        except IntegrityError:
            pass
        b.status = "b1"
        b.save()                                             # SQLite: may reuse outbox id N
        try:
            a.status = "a2"
            a.save()                                         # merges into the rolled-back event: update_data(N)
        except Exception as exc:                             # noqa: BLE001
            print("a.save() raised", type(exc).__name__)
    rows = {r.object_pk: r.data for r in OutboxEvent.objects.filter(cqrs_id="tracked", object_pk__in=[str(a.pk), str(b.pk)])}
    print(rows)
    b_msgs = [m.data for m in transport.published if m.data["instance_pk"] == b.pk]
    a_msgs = [m.data["instance_data"]["status"] for m in transport.published if m.data["instance_pk"] == a.pk]
    print("published for a:", a_msgs, "pending outbox rows:", OutboxEvent.objects.filter(published_at__isnull=True).count())
    print("previous_data published for b:", [m["previous_data"] for m in b_msgs])
    assert a_msgs == ["a2"], a_msgs
    assert all(m["previous_data"] == {"status": "b0"} for m in b_msgs), b_msgs


def test_relay_started_while_a_database_is_down_picks_it_up_once_it_is_back(transport, monkeypatch):
    from django.db import OperationalError, connections
    from dj_cqrs.master.relay import Relay

    transport.fail_with = ConnectionError("broker down")
    obj = SimplestModel.objects.create(name="stuck")           # stays in the outbox of 'default'
    transport.fail_with = None
    real_cursor = type(connections["default"]).cursor

    def down(self, *a, **kw):
        if self.alias == "default":
            raise OperationalError("could not connect to server: Connection refused")
        return real_cursor(self, *a, **kw)

    monkeypatch.setattr(type(connections["default"]), "cursor", down)
    relay = Relay(min_age=0)                                   # the relay starts during the DB outage
    monkeypatch.undo()                                         # the database is back
    print("relay databases:", relay.databases)
    assert relay.waiting() == ["default"]
    relay.run_until_done()                                     # tries again after its back-off
    relay.housekeeping()
    assert relay.waiting() == []
    assert any(m.data["instance_pk"] == obj.pk for m in transport.published), "event never relayed"
