"""Master revision rules: when ``cqrs_revision`` is bumped and when a SAVE is published."""

from __future__ import annotations

import pytest
from django.db import transaction

from tests.apps.master_app.models import FilteredModel, NoProduceModel, SimplestModel
from tests.unit.conftest import bodies, cqrs_settings_and_transport

pytestmark = pytest.mark.django_db(transaction=True)


def stored_revision(obj) -> int:
    return type(obj).objects.values_list("cqrs_revision", flat=True).get(pk=obj.pk)


def test_create_publishes_revision_zero(transport):
    obj = SimplestModel.objects.create(name="a")

    assert obj.cqrs_revision == 0
    assert stored_revision(obj) == 0
    [message] = transport.published
    assert message.routing_key == "simplest"
    assert message.data["signal_type"] == "SAVE"
    assert message.data["instance_data"]["cqrs_revision"] == 0
    assert message.data["instance_data"]["name"] == "a"


def test_each_committed_save_bumps_the_revision_by_one(transport):
    obj = SimplestModel.objects.create(name="a")
    for name in ("b", "c"):
        obj.name = name
        obj.save()

    assert obj.cqrs_revision == 2
    assert stored_revision(obj) == 2
    assert [(b["instance_data"]["name"], b["instance_data"]["cqrs_revision"]) for b in bodies(transport)] == [
        ("a", 0),
        ("b", 1),
        ("c", 2),
    ]


def test_several_saves_in_one_transaction_bump_once_and_send_the_final_state(transport):
    obj = SimplestModel.objects.create(name="a")
    with transaction.atomic():
        for name in ("b", "c", "d"):
            obj.name = name
            obj.save()
            assert obj.cqrs_revision == 1
        assert len(transport.published) == 1  # nothing before the commit

    assert stored_revision(obj) == 1
    assert len(transport.published) == 2
    last = transport.published[-1].data
    assert last["instance_data"]["name"] == "d"
    assert last["instance_data"]["cqrs_revision"] == 1


def test_two_python_objects_for_one_row_in_one_transaction_bump_once(transport):
    obj = SimplestModel.objects.create(name="a")
    with transaction.atomic():
        first = SimplestModel.objects.get(pk=obj.pk)
        second = SimplestModel.objects.get(pk=obj.pk)
        first.name = "first"
        first.save()
        second.name = "second"
        second.save()

    assert stored_revision(obj) == 1
    assert first.cqrs_revision == 1
    assert second.cqrs_revision == 1
    assert len(transport.published) == 2
    last = transport.published[-1].data["instance_data"]
    assert (last["name"], last["cqrs_revision"]) == ("second", 1)


def test_create_then_update_in_one_transaction_sends_one_save_at_revision_zero(transport):
    with transaction.atomic():
        obj = SimplestModel.objects.create(name="a")
        obj.name = "b"
        obj.save()

    assert stored_revision(obj) == 0
    [message] = transport.published
    assert message.data["instance_data"]["name"] == "b"
    assert message.data["instance_data"]["cqrs_revision"] == 0


def test_rollback_sends_nothing_and_the_next_transaction_publishes(transport):
    obj = SimplestModel.objects.create(name="a")
    with pytest.raises(RuntimeError), transaction.atomic():
        obj.name = "lost"
        obj.save()
        raise RuntimeError("rollback")

    assert stored_revision(obj) == 0
    assert len(transport.published) == 1

    with transaction.atomic():
        obj.name = "kept"
        obj.save()

    assert stored_revision(obj) == 1
    assert obj.cqrs_revision == 1
    assert len(transport.published) == 2
    data = transport.published[-1].data["instance_data"]
    assert (data["name"], data["cqrs_revision"]) == ("kept", 1)


def test_savepoint_rollback_of_a_create_sends_no_save(transport):
    with transaction.atomic():
        kept = SimplestModel.objects.create(name="kept")
        try:
            with transaction.atomic():
                gone = SimplestModel.objects.create(name="gone")
                raise RuntimeError("savepoint rollback")
        except RuntimeError:
            pass

    assert not SimplestModel.objects.filter(pk=gone.pk).exists()
    assert [b["instance_pk"] for b in bodies(transport)] == [kept.pk]


def test_savepoint_rollback_of_an_update_sends_no_save(transport):
    obj = SimplestModel.objects.create(name="a")
    with transaction.atomic():
        other = SimplestModel.objects.create(name="other")
        try:
            with transaction.atomic():
                obj.name = "rolled back"
                obj.save()
                raise RuntimeError("savepoint rollback")
        except RuntimeError:
            pass

    assert stored_revision(obj) == 0
    assert [b["instance_pk"] for b in bodies(transport)] == [obj.pk, other.pk]


def test_save_after_a_rolled_back_savepoint_publishes_the_committed_revision(transport):
    obj = SimplestModel.objects.create(name="a")
    with transaction.atomic():
        try:
            with transaction.atomic():
                obj.name = "rolled back"
                obj.save()
                raise RuntimeError("savepoint rollback")
        except RuntimeError:
            pass
        obj.name = "b"
        obj.save()

    assert stored_revision(obj) == 1
    data = transport.published[-1].data["instance_data"]
    assert (data["name"], data["cqrs_revision"]) == ("b", 1)


def test_update_fields_save_neither_bumps_nor_publishes(transport):
    obj = SimplestModel.objects.create(name="a")
    obj.name = "b"
    obj.save(update_fields=["name"])

    assert SimplestModel.objects.get(pk=obj.pk).name == "b"
    assert stored_revision(obj) == 0
    assert len(transport.published) == 1


def test_update_fields_save_with_auto_update_fields_bumps_and_publishes():
    with cqrs_settings_and_transport(master={"CQRS_AUTO_UPDATE_FIELDS": True}) as transport:
        obj = SimplestModel.objects.create(name="a")
        obj.name = "b"
        obj.save(update_fields=["name"])

        assert stored_revision(obj) == 1
        assert len(transport.published) == 2
        data = transport.published[-1].data["instance_data"]
        assert (data["name"], data["cqrs_revision"]) == ("b", 1)


def test_update_fields_save_with_update_cqrs_fields_bumps_and_publishes(transport):
    obj = SimplestModel.objects.create(name="a")
    before = SimplestModel.objects.get(pk=obj.pk).cqrs_updated
    obj.name = "b"
    obj.save(update_fields=["name"], update_cqrs_fields=True)

    row = SimplestModel.objects.get(pk=obj.pk)
    assert (row.name, row.cqrs_revision) == ("b", 1)
    assert row.cqrs_updated >= before
    assert len(transport.published) == 2
    assert transport.published[-1].data["instance_data"]["cqrs_revision"] == 1


def test_update_cqrs_fields_false_wins_over_the_global_setting():
    with cqrs_settings_and_transport(master={"CQRS_AUTO_UPDATE_FIELDS": True}) as transport:
        obj = SimplestModel.objects.create(name="a")
        obj.name = "b"
        obj.save(update_fields=["name"], update_cqrs_fields=False)

        assert stored_revision(obj) == 0
        assert len(transport.published) == 1


def test_update_fields_naming_cqrs_revision_publishes(transport):
    obj = SimplestModel.objects.create(name="a")
    obj.name = "b"
    obj.save(update_fields=["name", "cqrs_revision"])

    assert stored_revision(obj) == 1
    assert transport.published[-1].data["instance_data"]["name"] == "b"


def test_cqrs_produce_false_sends_nothing_but_counts_revisions(transport):
    obj = NoProduceModel.objects.create(name="a")
    obj.name = "b"
    obj.save()
    obj.delete()

    assert obj.cqrs_revision == 1
    assert transport.published == []


def test_is_sync_instance_false_sends_nothing_but_counts_revisions(transport):
    obj = FilteredModel.objects.create(name="skip")
    obj.save()
    obj.save()
    assert stored_revision(obj) == 2
    obj.delete()
    assert transport.published == []

    shown = FilteredModel.objects.create(name="shown")
    assert [b["instance_pk"] for b in bodies(transport)] == [shown.pk]


def test_saves_count_helpers(transport):
    obj = SimplestModel(name="a")
    assert obj.cqrs_saves_count == 0
    assert obj.is_initial_cqrs_save

    with transaction.atomic():
        obj.save()
        assert obj.cqrs_saves_count == 1
        assert obj.is_initial_cqrs_save
        obj.save()
        assert obj.cqrs_saves_count == 2
        assert not obj.is_initial_cqrs_save
        obj.reset_cqrs_saves_count()
        assert obj.cqrs_saves_count == 0
        obj.save()
        assert obj.cqrs_saves_count == 1


def test_filtered_model_saved_twice_in_one_transaction_bumps_once(transport):
    obj = FilteredModel.objects.create(name="skip")
    with transaction.atomic():
        obj.save()
        obj.name = "shown"
        obj.save()

    assert stored_revision(obj) == 1
    [message] = transport.published
    assert message.data["instance_data"]["cqrs_revision"] == 1


def test_saves_count_starts_again_after_commit_and_after_rollback(transport):
    obj = SimplestModel.objects.create(name="a")
    with transaction.atomic():
        obj.save()
        obj.save()
    assert obj.cqrs_saves_count == 0

    with transaction.atomic():
        obj.save()
        assert obj.cqrs_saves_count == 1
        assert obj.is_initial_cqrs_save

    with pytest.raises(RuntimeError), transaction.atomic():
        obj.save()
        obj.save()
        raise RuntimeError("rollback")
    assert obj.cqrs_saves_count == 0

    with transaction.atomic():
        obj.save()
        assert obj.cqrs_saves_count == 1
    assert stored_revision(obj) == 3  # create, then three committed transactions


def test_saves_count_is_one_during_an_autocommit_save_and_zero_after(transport):
    seen = []

    def receiver(sender, instance, **kwargs):
        seen.append((instance.cqrs_saves_count, instance.is_initial_cqrs_save))

    from django.db.models.signals import post_save

    post_save.connect(receiver, sender=SimplestModel)
    try:
        obj = SimplestModel.objects.create(name="a")
        obj.save()
    finally:
        post_save.disconnect(receiver, sender=SimplestModel)
    assert seen == [(1, True), (1, True)]
    assert obj.cqrs_saves_count == 0


def test_an_instance_with_a_saves_count_can_be_pickled(transport):
    import pickle

    obj = SimplestModel.objects.create(name="a")
    with transaction.atomic():
        obj.save()
        copy = pickle.loads(pickle.dumps(obj))
        assert copy.cqrs_saves_count == 1
    assert copy.cqrs_saves_count == 0
