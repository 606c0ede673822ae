"""``TransportPayload``: construction, wire dict, parsing, expiry, copies."""

from __future__ import annotations

import datetime

import pytest
from django.test import override_settings
from django.utils import timezone

from dj_cqrs.constants import SignalType
from dj_cqrs.core.payload import format_expires, message_expiration, parse_expires
from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.exceptions import PayloadError
from dj_cqrs.utils import get_message_expiration_dt
from tests.unit.conftest import cqrs_with

UTC = datetime.timezone.utc


def make(**kwargs):
    values = {"signal_type": "SAVE", "cqrs_id": "simplest", "instance_data": {"id": 1, "cqrs_revision": 3}, "instance_pk": 1}
    values.update(kwargs)
    return TransportPayload(**values)


def test_to_dict_key_order_and_values():
    expires = datetime.datetime(2026, 11, 22, 8, 27, 56, 999999, tzinfo=UTC)
    payload = make(previous_data={"a": 1}, correlation_id="c", expires=expires, retries=2, meta={"m": 1}, queue="q")
    assert list(payload.to_dict().items()) == [
        ("signal_type", "SAVE"),
        ("cqrs_id", "simplest"),
        ("instance_data", {"id": 1, "cqrs_revision": 3}),
        ("previous_data", {"a": 1}),
        ("instance_pk", 1),
        ("correlation_id", "c"),
        ("retries", 2),
        ("expires", "2026-11-22T08:27:56+00:00"),
        ("meta", {"m": 1}),
    ]


def test_properties():
    payload = make(signal_type=SignalType.SYNC, queue="q")
    assert payload.signal_type is SignalType.SYNC and str(payload.signal_type) == "SYNC"
    assert (payload.cqrs_id, payload.pk, payload.instance_pk, payload.queue) == ("simplest", 1, 1, "q")
    assert payload.revision == 3
    assert payload.is_sync
    assert not make().is_sync
    assert make(instance_data={"cqrs_revision": True}).revision is None
    assert make(instance_data={}).revision is None
    assert "SYNC simplest pk=1 rev=3 queue='q' retries=0" in repr(payload)


def test_unknown_signal_type_is_rejected_at_construction():
    with pytest.raises(ValueError):
        make(signal_type="UPSERT")


def test_with_changes_copies_and_retries_is_settable():
    payload = make(queue="q", meta={"m": 1})
    copy = payload.with_changes(retries=4)
    assert (copy.retries, payload.retries) == (4, 0)
    assert (copy.queue, copy.meta, copy.instance_data) == ("q", {"m": 1}, payload.instance_data)
    payload.retries = 1
    assert payload.retries == 1


def test_from_message_round_trip():
    expires = datetime.datetime(2030, 1, 1, tzinfo=UTC)
    original = make(previous_data={}, correlation_id="x", expires=expires, retries=1, meta={})
    parsed = TransportPayload.from_message(original.to_dict(), queue="replica")
    assert parsed.to_dict() == original.to_dict()
    assert parsed.queue == "replica"


def test_from_message_defaults_for_legacy_bodies():
    parsed = TransportPayload.from_message({"signal_type": "DELETE", "cqrs_id": "x", "instance_data": {}, "instance_pk": "k"})
    assert parsed.retries == 0
    assert parsed.previous_data is None and parsed.meta is None and parsed.correlation_id is None
    assert parsed.expires is not None and parsed.expires > timezone.now()


def test_from_message_without_expires_and_infinite_ttl_never_expires():
    with override_settings(CQRS=cqrs_with(master={"CQRS_MESSAGE_TTL": None})):
        parsed = TransportPayload.from_message({"signal_type": "SAVE", "cqrs_id": "x", "instance_data": {}, "instance_pk": 1})
    assert parsed.expires is None


@pytest.mark.parametrize(
    ("dct", "reason"),
    [
        ([], "not_an_object"),
        ({"cqrs_id": "x"}, "missing_keys"),
        ({"signal_type": "NOPE", "cqrs_id": "x", "instance_data": {}, "instance_pk": 1}, "bad_signal_type"),
        ({"signal_type": "SAVE", "cqrs_id": None, "instance_data": {}, "instance_pk": 1}, "bad_cqrs_id"),
        ({"signal_type": "SAVE", "cqrs_id": "x", "instance_data": None, "instance_pk": 1}, "bad_instance_data"),
        ({"signal_type": "SAVE", "cqrs_id": "x", "instance_data": {}, "instance_pk": [1]}, "bad_instance_pk"),
    ],
)
def test_from_message_errors_have_reasons(dct, reason):
    with pytest.raises(PayloadError) as info:
        TransportPayload.from_message(dct)
    assert info.value.reason == reason


def test_expiry():
    now = timezone.now()
    assert make(expires=now - datetime.timedelta(seconds=1)).is_expired()
    assert not make(expires=now + datetime.timedelta(minutes=1)).is_expired()
    assert not make(expires=None).is_expired()
    naive_past = datetime.datetime(2000, 1, 1)
    assert make(expires=naive_past).is_expired()


def test_format_and_parse_expires():
    aware = datetime.datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)
    assert format_expires(aware) == "2026-01-02T03:04:05+00:00"
    assert format_expires(None) is None
    assert parse_expires("2026-01-02T03:04:05+00:00") == aware.replace(microsecond=0)
    assert parse_expires("2026-01-02T05:04:05+02:00") == aware.replace(microsecond=0)
    assert parse_expires("2026-01-02T03:04:05").tzinfo is not None  # naive means UTC
    assert parse_expires(aware) is aware
    assert parse_expires(None) is None
    for bad in ("garbage", "2026-02-30T00:00:00", 5, []):
        with pytest.raises(PayloadError):
            parse_expires(bad)


def test_message_expiration():
    before = timezone.now()
    value = message_expiration(10)
    assert before + datetime.timedelta(seconds=10) <= value <= timezone.now() + datetime.timedelta(seconds=10)
    assert message_expiration(None, use_default=False) is None
    assert message_expiration() - timezone.now() > datetime.timedelta(hours=23)
    assert get_message_expiration_dt(10) <= timezone.now() + datetime.timedelta(seconds=10)
    with override_settings(CQRS=cqrs_with(master={"CQRS_MESSAGE_TTL": None})):
        assert message_expiration() is None
        assert get_message_expiration_dt() is None


def test_from_message_errors_are_caught_as_django_cqrs_code_catches_them():
    """django-cqrs raised ``KeyError`` for a missing key; an unknown signal type is a ValueError:
    ``PayloadError`` is both, and its text stays the plain message (not KeyError's repr)."""
    for dct, error in (
        ({"signal_type": "SAVE", "cqrs_id": "x", "instance_data": {}}, KeyError),
        ({"signal_type": "WHAT", "cqrs_id": "x", "instance_data": {}, "instance_pk": 1}, ValueError),
    ):
        with pytest.raises(error) as info:
            TransportPayload.from_message(dct)
        assert isinstance(info.value, PayloadError)
        assert str(info.value) == info.value.args[0] and not str(info.value).startswith("'")
