"""Events are bound to the database alias of the change: they go out when THAT alias commits."""

from __future__ import annotations

import pytest
from django.db import transaction

from tests.apps.master_app.models import SimplestModel
from tests.unit.conftest import bodies

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "other"])


def test_save_on_other_publishes_when_other_commits_not_default(transport):
    with transaction.atomic(using="other"):
        with transaction.atomic(using="default"):
            obj = SimplestModel.objects.using("other").create(name="on other")
        assert transport.published == []  # default committed, other did not yet
    [message] = transport.published
    assert message.data["instance_pk"] == obj.pk
    assert message.data["instance_data"]["name"] == "on other"
    assert not SimplestModel.objects.using("default").filter(name="on other").exists()


def test_rollback_on_other_publishes_nothing_even_when_default_commits(transport):
    with transaction.atomic(using="default"):
        kept = SimplestModel.objects.create(name="on default")
        with pytest.raises(RuntimeError), transaction.atomic(using="other"):
            SimplestModel.objects.using("other").create(name="rolled back")
            raise RuntimeError("rollback other")
    assert [b["instance_data"]["name"] for b in bodies(transport)] == ["on default"]
    assert bodies(transport)[0]["instance_pk"] == kept.pk
    assert not SimplestModel.objects.using("other").exists()


def test_rollback_on_default_keeps_the_event_of_other(transport):
    with pytest.raises(RuntimeError), transaction.atomic(using="default"):
        with transaction.atomic(using="other"):
            SimplestModel.objects.using("other").create(name="committed on other")
        SimplestModel.objects.create(name="rolled back on default")
        raise RuntimeError("rollback default")
    assert [b["instance_data"]["name"] for b in bodies(transport)] == ["committed on other"]


def test_same_pk_on_two_aliases_gives_two_events_with_their_own_revisions(transport):
    first = SimplestModel.objects.using("default").create(id=100, name="default")
    second = SimplestModel.objects.using("other").create(id=100, name="other")
    transport.reset()

    with transaction.atomic(using="default"), transaction.atomic(using="other"):
        first.name = "default 2"
        first.save()
        second.name = "other 2"
        second.save(using="other")
        second.save(using="other")

    assert sorted((b["instance_data"]["name"], b["instance_data"]["cqrs_revision"]) for b in bodies(transport)) == [
        ("default 2", 1),
        ("other 2", 1),
    ]
    assert SimplestModel.objects.using("other").get(pk=second.pk).cqrs_revision == 1


def test_delete_on_other_publishes_on_commit_of_other(transport):
    obj = SimplestModel.objects.using("other").create(name="a")
    pk = obj.pk
    transport.reset()
    with transaction.atomic(using="other"):
        obj.delete(using="other")
        with transaction.atomic(using="default"):
            pass
        assert transport.published == []
    [message] = transport.published
    assert message.data["signal_type"] == "DELETE"
    assert message.data["instance_data"]["id"] == pk
    assert message.data["instance_data"]["cqrs_revision"] == 1


def test_cqrs_sync_using_other_reads_the_other_row(transport):
    SimplestModel.objects.using("default").create(name="default row")
    obj = SimplestModel.objects.using("other").create(name="other row")
    transport.reset()

    assert obj.cqrs_sync(using="other") is True
    [message] = transport.published
    assert message.data["signal_type"] == "SYNC"
    assert message.data["instance_data"]["name"] == "other row"


def test_bulk_update_on_other_publishes_the_rows_of_other(transport):
    SimplestModel.objects.using("other").create(name="a")
    SimplestModel.objects.using("other").create(name="b")
    SimplestModel.objects.using("default").create(name="untouched")
    transport.reset()

    count = SimplestModel.cqrs.bulk_update(SimplestModel.objects.using("other").all(), name="z")

    assert count == 2
    assert [(b["instance_data"]["name"], b["instance_data"]["cqrs_revision"]) for b in bodies(transport)] == [
        ("z", 1),
        ("z", 1),
    ]
    assert SimplestModel.objects.using("default").get().name == "untouched"
