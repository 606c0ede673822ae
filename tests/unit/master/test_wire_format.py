"""The JSON bodies and routing keys a master puts on the wire (contract section 2)."""

from __future__ import annotations

import base64
import datetime
import decimal
import io
import json
import re
import uuid

import pytest
from django.core.management import call_command
from django.utils import timezone

from tests.apps.master_app.models import (
    AllTypesModel,
    BasicFieldsModel,
    CustomDeleteModel,
    FieldsSubsetModel,
    FKModel,
    Publisher,
    SimplestModel,
    UUIDPkModel,
)
from tests.apps.replica_app.models import (
    AllTypesModelRef,
    CustomDeleteRef,
    FKModelRef,
    UUIDPkModelRef,
)
from tests.unit.conftest import cqrs_settings_and_transport

pytestmark = pytest.mark.django_db(transaction=True)

BODY_KEYS = [
    "signal_type",
    "cqrs_id",
    "instance_data",
    "previous_data",
    "instance_pk",
    "correlation_id",
    "retries",
    "expires",
    "meta",
]
STR_DATETIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{6})?\+00:00$")
ISO_SECONDS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$")


def test_save_body_keys_order_and_types(transport):
    obj = SimplestModel.objects.create(name="a")
    [message] = transport.published
    body = message.data

    assert list(body) == BODY_KEYS
    assert body["signal_type"] == "SAVE"
    assert body["cqrs_id"] == "simplest"
    assert body["instance_data"] == {
        "id": obj.pk,
        "name": "a",
        "cqrs_revision": 0,
        "cqrs_updated": str(SimplestModel.objects.get(pk=obj.pk).cqrs_updated),
    }
    assert body["previous_data"] is None  # no CQRS_TRACKED_FIELDS
    assert body["instance_pk"] == obj.pk and isinstance(body["instance_pk"], int)
    assert body["correlation_id"] is None
    assert body["retries"] == 0 and isinstance(body["retries"], int)
    assert isinstance(body["expires"], str)
    assert body["meta"] == {}
    assert message.body.startswith(b'{"signal_type":"SAVE","cqrs_id":"simplest","instance_data":{')


def test_instance_data_keys_in_model_field_order_as_django_cqrs(transport, tmp_path):
    """django-cqrs walks ``_meta`` fields: the mixin's ``cqrs_revision``/``cqrs_updated`` stand where
    the mixin puts them (after an auto ``id``, before an explicit primary key), and at the end
    when ``CQRS_FIELDS`` leaves them out. The same order in ``to_cqrs_dict()``, bodies and dumps."""
    simplest = SimplestModel.objects.create(name="a")
    BasicFieldsModel.objects.create(int_field=1, char_field="c")
    subset = FieldsSubsetModel.objects.create(public="p")
    expected = {
        "simplest": ["id", "cqrs_revision", "cqrs_updated", "name"],
        "basic": ["cqrs_revision", "cqrs_updated", "int_field", "bool_field", "char_field", "date_field",
                  "datetime_field", "float_field", "url_field", "uuid_field", "decimal_field"],
        "fields_subset": ["id", "public", "cqrs_revision", "cqrs_updated"],
    }
    assert {m.data["cqrs_id"]: list(m.data["instance_data"]) for m in transport.published} == expected
    assert list(simplest.to_cqrs_dict()) == expected["simplest"]
    assert list(subset.to_cqrs_dict()) == expected["fields_subset"]

    path = tmp_path / "dump"
    call_command("cqrs_bulk_dump", "--cqrs-id", "simplest", "-o", str(path), stderr=io.StringIO())
    assert list(json.loads(path.read_text().splitlines()[1])) == expected["simplest"]


def test_cqrs_updated_is_str_of_the_aware_datetime(transport):
    obj = SimplestModel.objects.create(name="a")
    updated = transport.published[0].data["instance_data"]["cqrs_updated"]
    stored = SimplestModel.objects.get(pk=obj.pk).cqrs_updated

    assert timezone.is_aware(stored)
    assert updated == str(stored)
    assert STR_DATETIME.match(updated), updated


def test_expires_is_iso_with_seconds_and_offset_from_the_ttl(transport):
    before = timezone.now().replace(microsecond=0)
    SimplestModel.objects.create(name="a")
    after = timezone.now()

    expires = transport.published[0].data["expires"]
    assert ISO_SECONDS.match(expires), expires
    parsed = datetime.datetime.fromisoformat(expires)
    assert before + datetime.timedelta(seconds=86400) <= parsed <= after + datetime.timedelta(seconds=86400)


def test_expires_follows_a_custom_ttl():
    with cqrs_settings_and_transport(master={"CQRS_MESSAGE_TTL": 60}) as transport:
        before = timezone.now().replace(microsecond=0)
        SimplestModel.objects.create(name="a")
        after = timezone.now()
    parsed = datetime.datetime.fromisoformat(transport.published[0].data["expires"])
    assert before + datetime.timedelta(seconds=60) <= parsed <= after + datetime.timedelta(seconds=60)


def test_expires_is_null_when_the_ttl_is_none():
    with cqrs_settings_and_transport(master={"CQRS_MESSAGE_TTL": None}) as transport:
        SimplestModel.objects.create(name="a")
    body = transport.published[0].data
    assert "expires" in body
    assert body["expires"] is None


def test_routing_keys_of_save_delete_broadcast_and_direct_sync(transport):
    obj = SimplestModel.objects.create(name="a")
    obj.cqrs_sync()
    obj.cqrs_sync(queue="replica_b")
    obj.delete()

    assert [(m.routing_key, m.data["signal_type"]) for m in transport.published] == [
        ("simplest", "SAVE"),
        ("simplest", "SYNC"),
        ("cqrs.replica_b.simplest", "SYNC"),
        ("simplest", "DELETE"),
    ]
    # The target queue travels only in the routing key.
    assert all("queue" not in m.data for m in transport.published)


def test_delete_body(transport):
    obj = SimplestModel.objects.create(name="a")
    obj.name = "b"
    obj.save()
    obj.name = "c"
    obj.save()
    pk = obj.pk
    before = timezone.now()
    obj.delete()

    body = transport.published[-1].data
    assert list(body) == BODY_KEYS
    assert body["signal_type"] == "DELETE"
    assert body["instance_pk"] == pk
    assert body["previous_data"] is None
    assert body["meta"] == {}
    data = body["instance_data"]
    assert list(data) == ["id", "cqrs_revision", "cqrs_updated"]
    assert data["id"] == pk
    assert data["cqrs_revision"] == 3  # stored 2, plus one
    assert STR_DATETIME.match(data["cqrs_updated"])
    assert datetime.datetime.fromisoformat(data["cqrs_updated"]) >= before


def test_delete_key_is_id_whatever_the_pk_is_called(transport):
    BasicFieldsModel.objects.create(int_field=7, char_field="x")
    BasicFieldsModel.objects.get(int_field=7).delete()

    data = transport.published[-1].data["instance_data"]
    assert data["id"] == 7
    assert "int_field" not in data
    assert data["cqrs_revision"] == 1


def test_delete_carries_custom_data_to_the_replica(transport):
    obj = CustomDeleteModel.objects.create(name="gone soon")
    transport.join(fail_fast=True)
    obj.delete()

    data = transport.published[-1].data["instance_data"]
    assert data["custom"] == {"name": "gone soon"}
    transport.join(fail_fast=True)
    assert CustomDeleteRef.deleted_custom == [{"name": "gone soon"}]
    assert not CustomDeleteRef.objects.exists()


def test_uuid_pk_is_a_string_on_save_and_delete(transport):
    uid = uuid.UUID("12345678-1234-5678-1234-567812345678")
    obj = UUIDPkModel.objects.create(uid=uid, name="u")
    transport.join(fail_fast=True)
    assert UUIDPkModelRef.objects.get(uid=uid).name == "u"
    obj.delete()

    save, delete = (m.data for m in transport.published)
    assert save["instance_pk"] == str(uid)
    assert save["instance_data"]["uid"] == str(uid)
    assert delete["instance_pk"] == str(uid)
    assert delete["instance_data"]["id"] == str(uid)
    transport.join(fail_fast=True)
    assert not UUIDPkModelRef.objects.exists()


def test_decimal_is_an_exact_json_number(transport):
    AllTypesModel.objects.create(id=1, decimal=decimal.Decimal("9876543.21098765"))

    raw = transport.published[0].body
    # The exact digits of the stored Decimal (decimal_places=20), not a float's shortest repr.
    assert b'"decimal":9876543.21098765000000000000' in raw
    assert b'"decimal":"' not in raw
    transport.join(fail_fast=True)
    assert AllTypesModelRef.objects.get(pk=1).decimal == decimal.Decimal("9876543.21098765")


def test_time_duration_binary_json_and_uuid_are_encoded_and_decoded_on_the_replica(transport):
    values = {
        "text": "ünïcødé / slash",
        "time": datetime.time(12, 30, 15, 123),
        "duration": datetime.timedelta(days=1, seconds=5, microseconds=7),
        "binary": b"\x00\xffabc",
        "json": {"a": [1, 2.5, None], "b": "x"},
        "uuid": uuid.UUID(int=5),
    }
    AllTypesModel.objects.create(id=1, **values)

    data = transport.published[0].data["instance_data"]
    assert data["time"] == "12:30:15.000123"
    assert data["duration"] == "P1DT00H00M05.000007S"
    assert base64.b64decode(data["binary"]) == b"\x00\xffabc"
    assert data["json"] == {"a": [1, 2.5, None], "b": "x"}
    assert data["uuid"] == "00000000-0000-0000-0000-000000000005"
    assert data["text"] == "ünïcødé / slash"

    transport.join(fail_fast=True)
    ref = AllTypesModelRef.objects.get(pk=1)
    for name, value in values.items():
        got = getattr(ref, name)
        assert (bytes(got) if name == "binary" else got) == value, name


def test_null_values_stay_null(transport):
    AllTypesModel.objects.create(id=2)
    data = transport.published[0].data["instance_data"]
    assert data["time"] is None and data["duration"] is None and data["binary"] is None
    transport.join(fail_fast=True)
    assert AllTypesModelRef.objects.get(pk=2).time is None


def test_foreign_key_is_the_raw_id_under_the_field_name(transport):
    publisher = Publisher.objects.create(name="p")
    FKModel.objects.create(id=1, publisher=publisher, name="n")
    FKModel.objects.create(id=2, publisher=None, name="none")

    first, second = (m.data["instance_data"] for m in transport.published)
    assert first["publisher"] == publisher.pk
    assert "publisher_id" not in first
    assert second["publisher"] is None
    transport.join(fail_fast=True)
    assert FKModelRef.objects.get(pk=1).publisher_id == publisher.pk
    assert FKModelRef.objects.get(pk=2).publisher_id is None


def test_cqrs_fields_subset(transport):
    obj = FieldsSubsetModel.objects.create(public="shown", secret="hidden")
    data = transport.published[0].data["instance_data"]
    assert set(data) == {"id", "public", "cqrs_revision", "cqrs_updated"}
    assert data["id"] == obj.pk
    assert data["public"] == "shown"
    assert b"hidden" not in transport.published[0].body


def test_payload_decodes_back_to_the_same_event(transport):
    obj = SimplestModel.objects.create(name="a")
    [payload] = transport.payloads
    assert payload.signal_type.value == "SAVE"
    assert payload.cqrs_id == "simplest"
    assert payload.pk == obj.pk
    assert payload.revision == 0
    assert payload.queue is None
    assert payload.expires is not None and not payload.is_expired()


def test_basic_fields_round_trip_to_the_replica(transport):
    from tests.apps.replica_app.models import BasicFieldsModelRef

    now = timezone.now()
    values = {
        "int_field": 7,
        "bool_field": True,
        "char_field": "é/x",
        "date_field": datetime.date(2024, 1, 2),
        "datetime_field": now,
        "float_field": 1.5,
        "url_field": "https://example.com/a?b=c",
        "uuid_field": uuid.UUID(int=5),
        "decimal_field": decimal.Decimal("1234.123456789"),
    }
    obj = BasicFieldsModel.objects.create(**values)
    data = transport.published[0].data
    assert data["instance_data"]["date_field"] == "2024-01-02"
    assert data["instance_data"]["datetime_field"] == str(now)
    assert data["previous_data"] == {name: None for name in values} | {"cqrs_revision": None}

    transport.join(fail_fast=True)
    ref = BasicFieldsModelRef.objects.get(pk=7)
    for name, value in values.items():
        assert getattr(ref, name) == value, name

    obj.delete()
    transport.join(fail_fast=True)
    assert not BasicFieldsModelRef.objects.exists()
