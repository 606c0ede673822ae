"""Replica data handling: ``CQRS_MAPPING``, required fields, the PK, custom serialization,
``CQRS_SELECT_FOR_UPDATE`` and value conversion."""

from __future__ import annotations

import decimal
import logging

import pytest

from dj_cqrs.core.messages import Action
from tests.apps.replica_app.models import (
    AllTypesModelRef,
    AuthorRef,
    FKModelRef,
    MappedModelRef,
    RecordingQuerySet,
    SelectForUpdateRef,
    SimplestModelRef,
)
from tests.unit.conftest import cqrs_settings_and_transport
from tests.unit.replica.helpers import UPDATED, row, send

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def errors(caplog):
    caplog.set_level(logging.ERROR, logger="django-cqrs")
    return lambda: [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and r.name == "django-cqrs.replica"]


def no_retries():
    return cqrs_settings_and_transport(replica={"CQRS_MAX_RETRIES": 0})


def test_mapping_is_a_whitelist(transport):
    data = row(7, 0, status="open", owner=3, other="not mapped", unknown="dropped")
    outcome = send(transport, "SAVE", data, "tracked", previous_data={"status": None, "other": None})

    assert outcome.status == "applied"
    ref = MappedModelRef.objects.get(ext_id=7)
    assert (ref.state, ref.owner_id, ref.cqrs_revision) == ("open", 3, 0)

    send(transport, "SAVE", row(7, 1, status="closed", owner=3, other="x"), "tracked", previous_data={"status": "open", "other": "y"})
    ref.refresh_from_db()
    assert ref.state == "closed"
    assert ref.last_previous == {"state": "open"}  # previous_data mapped, unmapped keys dropped


def test_mapping_with_a_missing_master_key_fails(errors):
    with no_retries() as transport:
        outcome = send(transport, "SAVE", row(7, 0, status="open"), "tracked")

    assert outcome.action is Action.DEAD_LETTER
    assert outcome.reason == "bad_mapping"
    assert errors() == ["Bad master-replica mapping for owner (tracked)."]
    assert not MappedModelRef.objects.exists()


def test_missing_required_field_fails_even_with_a_default(errors):
    with no_retries() as transport:
        outcome = send(transport, "SAVE", row(1, 0), "all_types")  # no "text" (null=False, default "")

    assert (outcome.action, outcome.reason) == (Action.DEAD_LETTER, "missing_required_fields")
    # django-cqrs's text, then the field (x-cqrs-error carries it too: test_first_hour.py)
    assert errors() == ["Not all required CQRS fields are provided in data (all_types). Missing: text."]
    assert outcome.detail == "missing_required_fields: required field(s) missing: text"
    assert not AllTypesModelRef.objects.exists()


def test_extra_keys_are_dropped_without_custom_serialization(transport):
    assert send(transport, "SAVE", row(1, 0, name="a", not_a_field="x", nested={"a": 1})).status == "applied"
    assert SimplestModelRef.objects.get(pk=1).name == "a"


def test_missing_pk_fails(errors):
    with no_retries() as transport:
        save = send(transport, "SAVE", {"name": "x", "cqrs_revision": 0, "cqrs_updated": UPDATED}, "author")
        delete = send(transport, "DELETE", {"cqrs_revision": 0, "cqrs_updated": UPDATED})

    assert (save.action, save.reason) == (Action.DEAD_LETTER, "missing_pk")
    assert (delete.action, delete.reason) == (Action.DEAD_LETTER, "missing_pk")
    assert errors() == ["CQRS PK is not provided in data (author).", "CQRS PK is not provided in data (simplest)."]


def test_missing_pk_is_reported_before_the_other_required_fields(errors):
    """django-cqrs checks the key first: a row without ``id`` logs the PK line (not "Not all
    required ...") even when ``id`` is also a required field; the reason says the same."""
    with no_retries() as transport:
        outcome = send(transport, "SAVE", {"name": "x", "cqrs_revision": 0, "cqrs_updated": UPDATED})

    assert (outcome.action, outcome.reason) == (Action.DEAD_LETTER, "missing_pk")
    assert errors() == ["CQRS PK is not provided in data (simplest)."]


def test_missing_revision_fields_fail(errors):
    with no_retries() as transport:
        outcome = send(transport, "SAVE", {"id": 1, "name": "x", "cqrs_revision": "1", "cqrs_updated": UPDATED})
    assert (outcome.action, outcome.reason) == (Action.DEAD_LETTER, "missing_cqrs_fields")
    assert errors() == ["CQRS sync fields are not provided in data (simplest)."]


def test_invalid_value_is_a_create_error(errors):
    with no_retries() as transport:
        outcome = send(transport, "SAVE", row(1, 0, text="t", uuid="not-a-uuid"), "all_types")
    assert outcome.action is Action.DEAD_LETTER
    assert "ValidationError" in outcome.detail
    assert errors()[0].startswith("CQRS create error: pk = 1, cqrs_revision = 0 (all_types):")


def test_custom_serialization_passes_nested_data_unchanged(transport):
    data = {
        "id": 1,
        "name": "Ann",
        "publisher": {"id": 9, "name": "Penguin"},
        "books": [{"id": 1, "title": "A"}, {"id": 2, "title": "B"}],
        "cqrs_revision": 0,
        "cqrs_updated": UPDATED,
    }
    assert send(transport, "SAVE", data, "author").status == "applied"
    ref = AuthorRef.objects.get(pk=1)
    assert (ref.publisher_name, ref.book_titles) == ("Penguin", ["A", "B"])


def test_select_for_update_is_used_only_when_enabled(transport):
    send(transport, "SAVE", row(1, 0, name="a"), "select_for_update")
    send(transport, "SAVE", row(1, 1, name="b"), "select_for_update")
    send(transport, "SAVE", row(1, 0, name="c"))  # SimplestModelRef: no lock

    assert RecordingQuerySet.calls == ["SelectForUpdateRef", "SelectForUpdateRef"]
    assert SelectForUpdateRef.objects.get(pk=1).name == "b"


def test_values_are_converted_for_the_fields(transport):
    data = row(1, 0, text="t", decimal=12.5, time="10:11:12", duration="P1DT00H00M01S", binary="AAE=")
    assert send(transport, "SAVE", data, "all_types").status == "applied"
    ref = AllTypesModelRef.objects.get(pk=1)
    assert ref.decimal == decimal.Decimal("12.5")
    assert str(ref.time) == "10:11:12"
    assert ref.duration.total_seconds() == 86401
    assert bytes(ref.binary) == b"\x00\x01"

    assert send(transport, "SAVE", row(2, 0, publisher=5, name="n"), "fk_model").status == "applied"
    assert FKModelRef.objects.get(pk=2).publisher_id == 5
