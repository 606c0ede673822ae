"""Replica revision rules (``update_instance``) and their log lines."""

from __future__ import annotations

import logging

import pytest

from dj_cqrs.core.messages import Action
from tests.apps.replica_app.models import SimplestModelRef
from tests.unit.replica.helpers import row, send

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def logs(caplog):
    caplog.set_level(logging.INFO, logger="django-cqrs")
    return caplog


def messages(caplog, level):
    return [r.getMessage() for r in caplog.records if r.levelno == level and r.name.startswith("django-cqrs.replica")]


def stored(pk=1):
    ref = SimplestModelRef.objects.get(pk=pk)
    return ref.name, ref.cqrs_revision


def test_create_then_next_revision_applies(transport, logs):
    assert send(transport, "SAVE", row(1, 0, name="a")).status == "applied"
    assert send(transport, "SAVE", row(1, 1, name="b")).action is Action.ACK
    assert stored() == ("b", 1)
    assert messages(logs, logging.WARNING) == [] and messages(logs, logging.ERROR) == []


def test_older_revision_is_ignored_as_wrong_order(transport, logs):
    send(transport, "SAVE", row(1, 2, name="new"))
    outcome = send(transport, "SAVE", row(1, 1, name="old"))

    assert outcome.action is Action.ACK
    assert outcome.status == "ignored_stale"
    assert stored() == ("new", 2)
    assert messages(logs, logging.ERROR) == [
        "Wrong CQRS sync order: pk = 1, cqrs_revision = new 1 / existing 2 (simplest)."
    ]


def test_same_revision_is_ignored_as_duplicate(transport, logs):
    send(transport, "SAVE", row(1, 3, name="first"))
    outcome = send(transport, "SAVE", row(1, 3, name="again"))

    assert (outcome.action, outcome.status) == (Action.ACK, "ignored_duplicate")
    assert stored() == ("first", 3)
    assert messages(logs, logging.WARNING) == ["Received duplicate CQRS data: pk = 1, cqrs_revision = 3 (simplest)."]


def test_duplicate_at_revision_zero_also_warns_about_a_creation_race(transport, logs):
    send(transport, "SAVE", row(1, 0, name="a"))
    send(transport, "SAVE", row(1, 0, name="a"))
    assert messages(logs, logging.WARNING) == [
        "Received duplicate CQRS data: pk = 1, cqrs_revision = 0 (simplest).",
        "CQRS potential creation race condition: pk = 1 (simplest).",
    ]


def test_gap_is_logged_and_applied(transport, logs):
    send(transport, "SAVE", row(1, 1, name="a"))
    outcome = send(transport, "SAVE", row(1, 4, name="d"))

    assert (outcome.action, outcome.status) == (Action.ACK, "applied")
    assert stored() == ("d", 4)
    assert messages(logs, logging.WARNING) == [
        "Lost or filtered out 2 CQRS packages: pk = 1, cqrs_revision = 4 (simplest)"
    ]


def test_sync_with_a_lower_revision_is_applied_with_a_downgrade_warning(transport, logs):
    send(transport, "SAVE", row(1, 5, name="replica ahead"))
    outcome = send(transport, "SYNC", row(1, 2, name="master truth"))

    assert (outcome.action, outcome.status) == (Action.ACK, "applied")
    assert stored() == ("master truth", 2)
    assert messages(logs, logging.WARNING) == [
        "CQRS revision downgrade on sync: pk = 1, cqrs_revision = new 2 / existing 5 (simplest)."
    ]


def test_sync_with_the_same_revision_is_applied(transport, logs):
    send(transport, "SAVE", row(1, 1, name="a"))
    send(transport, "SYNC", row(1, 1, name="repaired"))
    assert stored() == ("repaired", 1)
    assert messages(logs, logging.WARNING) == []


def test_delete_has_no_revision_check_and_a_missing_row_is_fine(transport):
    send(transport, "SAVE", row(1, 5, name="a"))
    assert send(transport, "DELETE", {"id": 1, "cqrs_revision": 1, "cqrs_updated": "x"}).action is Action.ACK
    assert not SimplestModelRef.objects.exists()

    outcome = send(transport, "DELETE", {"id": 1, "cqrs_revision": 6, "cqrs_updated": "x"})
    assert (outcome.action, outcome.status) == (Action.ACK, "applied")
    assert transport.dead_letters == []


def test_cqrs_save_can_be_called_directly(transport):
    assert SimplestModelRef.cqrs_save(row(1, 0, name="direct")).name == "direct"
    assert SimplestModelRef.cqrs_save(row(1, 3, name="synced"), sync=True).cqrs_revision == 3
    assert SimplestModelRef.cqrs_delete({"id": 1, "cqrs_revision": 4, "cqrs_updated": "2024-01-01T00:00:00+00:00"}) is True
    assert not SimplestModelRef.objects.exists()
