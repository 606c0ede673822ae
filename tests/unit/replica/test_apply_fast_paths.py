"""The batched apply's shortcuts give what the general code gives: the plain mapping of
:func:`dj_cqrs.replica.bulk.map_row`, the array literals of :mod:`dj_cqrs.replica.pg_arrays`, the
batch-wide ``max_message_bytes`` of :func:`dj_cqrs.replica.decoding.validate` and the payload's
signal type."""

from __future__ import annotations

import decimal

import pytest
from django.db import connection

from dj_cqrs import encoding
from dj_cqrs.constants import SignalType
from dj_cqrs.core.messages import Action, InboundMessage, Outcome
from dj_cqrs.core.payload import TransportPayload
from dj_cqrs.core.reasons import Reason
from dj_cqrs.replica import context
from dj_cqrs.replica.bulk import MappingError, map_row
from dj_cqrs.replica.decoding import validate
from dj_cqrs.replica.pg_arrays import int_array, text_array
from dj_cqrs.replica.values import assignable
from tests.apps.replica_app.models import BasicFieldsModelRef, FKModelRef, MappedBatchRef

UPDATED = "2024-01-02 03:04:05.678901+00:00"


def general_path(model, data):
    """What ``map_row`` gave before its plain shortcut: the manager's mapping, then assignable."""
    mapped = model.cqrs._map_save_data(data)
    return None if mapped is None else assignable(model, mapped)


ROWS = [
    (
        BasicFieldsModelRef,
        {
            "int_field": 1,
            "bool_field": True,
            "char_field": "x\té\\",
            "decimal_field": encoding.loads("1.250000000000000"),
            "datetime_field": UPDATED,
            "unknown": [1, 2],
            "cqrs_revision": 3,
            "cqrs_updated": UPDATED,
        },
    ),
    (
        FKModelRef,
        {"id": 2, "publisher": 7, "name": "n", "cqrs_revision": 0, "cqrs_updated": UPDATED},
    ),
    (
        FKModelRef,
        {"id": 3, "publisher_id": None, "name": "", "cqrs_revision": 0, "cqrs_updated": UPDATED},
    ),
    (MappedBatchRef, {"id": 4, "title": "t", "cqrs_revision": 1, "cqrs_updated": UPDATED}),
]


@pytest.mark.parametrize(("model", "data"), ROWS)
def test_map_row_equals_the_general_path(model, data):
    expected = general_path(model, dict(data))
    got = map_row(model, dict(data))
    assert got == expected
    assert list(got) == list(expected)  # the same keys in the same order
    assert {k: type(v) for k, v in got.items()} == {k: type(v) for k, v in expected.items()}


def test_map_row_converts_exact_decimals_and_foreign_keys():
    got = map_row(
        FKModelRef,
        {"id": 2, "publisher": 7, "name": "", "cqrs_revision": 0, "cqrs_updated": UPDATED},
    )
    assert got == {
        "id": 2,
        "name": "",
        "cqrs_revision": 0,
        "cqrs_updated": UPDATED,
        "publisher_id": 7,
    }
    data = {
        "int_field": 1,
        "decimal_field": encoding.loads("0.1"),
        "cqrs_revision": 0,
        "cqrs_updated": UPDATED,
    }
    assert map_row(BasicFieldsModelRef, data)["decimal_field"] == decimal.Decimal("0.1")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"id": 1, "cqrs_updated": UPDATED}, Reason.MISSING_CQRS_FIELDS),
        ({"id": 1, "cqrs_revision": True, "cqrs_updated": UPDATED}, Reason.MISSING_CQRS_FIELDS),
        ({"id": 1, "cqrs_revision": 0}, Reason.MISSING_CQRS_FIELDS),
        ({"name": "n", "cqrs_revision": 0, "cqrs_updated": UPDATED}, Reason.MISSING_PK),
        ({"cqrs_revision": 0, "cqrs_updated": UPDATED}, Reason.MISSING_PK),
    ],
)
def test_incomplete_rows_keep_the_general_reason(data, reason):
    assert general_path(FKModelRef, dict(data)) is None
    context.current().reason = None
    with pytest.raises(MappingError) as caught:
        map_row(FKModelRef, dict(data))
    assert caught.value.reason is reason


def test_a_required_field_missing_keeps_its_reason():
    data = {"id": 1, "publisher": None, "cqrs_revision": 0, "cqrs_updated": UPDATED}  # no name
    assert general_path(FKModelRef, dict(data)) is None
    with pytest.raises(MappingError) as caught:
        map_row(FKModelRef, data)
    assert caught.value.reason is Reason.MISSING_REQUIRED_FIELDS
    assert "name" in str(caught.value)


def test_overridden_mapping_methods_are_used(monkeypatch):
    calls = []
    manager_class = type(FKModelRef.cqrs)
    original = manager_class._remove_excessive_data

    def spy(self, data):
        calls.append(dict(data))
        return original(self, data)

    monkeypatch.setattr(manager_class, "_remove_excessive_data", spy)
    map_row(FKModelRef, {"id": 2, "name": "n", "cqrs_revision": 0, "cqrs_updated": UPDATED})
    assert calls == [{"id": 2, "name": "n", "cqrs_revision": 0, "cqrs_updated": UPDATED}]


def test_array_literals():
    assert int_array([]) == "{}"
    assert int_array([3, -1, 2]) == "{3,-1,2}"
    assert (
        text_array(["a", 'b"c', "d\\e", "", "NULL", "x,y}{"])
        == r'{"a","b\"c","d\\e","","NULL","x,y}{"}'
    )


@pytest.mark.django_db
def test_array_literals_read_back_by_postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only")
    texts = ["a", 'b"c', "d\\e", "", "NULL", "x,y}{", "é ü", " lead", "tab\there"]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT %s::varchar[], %s::int[]", [text_array(texts), int_array([5, -2147483648, 0])]
        )
        got_texts, got_ints = cursor.fetchone()
    assert got_texts == texts
    assert got_ints == [5, -2147483648, 0]


def body(**overrides):
    data = {
        "signal_type": "SAVE",
        "cqrs_id": "simplest",
        "instance_data": {"id": 1, "name": "n", "cqrs_revision": 0, "cqrs_updated": UPDATED},
        "previous_data": None,
        "instance_pk": 1,
        "correlation_id": None,
        "retries": 0,
        "expires": None,
        "meta": None,
    }
    data.update(overrides)
    return encoding.dumps_bytes(data)


def test_validate_with_the_batch_limit_decides_as_with_the_setting(settings):
    message = InboundMessage(body(), routing_key="simplest")
    size = len(message.body)
    settings.CQRS = {
        **settings.CQRS,
        "replica": {**settings.CQRS.get("replica", {}), "max_message_bytes": size - 1},
    }
    by_setting = validate(message)
    by_argument = validate(message, size - 1)
    assert isinstance(by_setting, Outcome) and isinstance(by_argument, Outcome)
    assert by_setting.reason == by_argument.reason == Reason.TOO_LARGE
    assert isinstance(validate(message, size), TransportPayload)


def test_signal_types_are_members():
    payload = TransportPayload.from_message(encoding.loads(body(signal_type="SYNC")))
    assert payload.signal_type is SignalType.SYNC
    assert TransportPayload("DELETE", "x", {}, 1).signal_type is SignalType.DELETE
    assert TransportPayload(SignalType.SAVE, "x", {}, 1).signal_type is SignalType.SAVE
    with pytest.raises(ValueError):
        TransportPayload("NOPE", "x", {}, 1)
    outcome = validate(InboundMessage(body(signal_type="NOPE"), routing_key="simplest"))
    assert isinstance(outcome, Outcome) and outcome.action is Action.DEAD_LETTER
    assert outcome.reason == Reason.BAD_SIGNAL_TYPE
    missing = validate(
        InboundMessage(b'{"signal_type":"SAVE","instance_pk":1}', routing_key="simplest")
    )
    assert isinstance(missing, Outcome) and missing.reason == Reason.MISSING_KEYS
    assert "cqrs_id, instance_data" in missing.detail
