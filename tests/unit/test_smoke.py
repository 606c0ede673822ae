import datetime
import decimal
import uuid

import pytest
from django.utils import timezone

from tests.apps.master_app.models import BasicFieldsModel, SimplestModel
from tests.apps.replica_app.models import BasicFieldsModelRef, SimplestModelRef


@pytest.mark.django_db(transaction=True)
def test_create_update_delete_roundtrip(transport):
    obj = SimplestModel.objects.create(name="a")
    assert len(transport.published) == 1
    transport.join(fail_fast=True)
    assert SimplestModelRef.objects.get(pk=obj.pk).name == "a"
    obj.name = "b"
    obj.save()
    assert obj.cqrs_revision == 1
    transport.join(fail_fast=True)
    ref = SimplestModelRef.objects.get(pk=obj.pk)
    assert (ref.name, ref.cqrs_revision) == ("b", 1)
    obj.delete()
    transport.join(fail_fast=True)
    assert not SimplestModelRef.objects.filter(pk=obj.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_basic_fields(transport):
    now = timezone.now()
    BasicFieldsModel.objects.create(
        int_field=7, bool_field=True, char_field="é/x", date_field=datetime.date(2024, 1, 2),
        datetime_field=now, float_field=1.5, uuid_field=uuid.UUID(int=5),
        decimal_field=decimal.Decimal("1234.123456789"),
    )
    transport.join(fail_fast=True)
    ref = BasicFieldsModelRef.objects.get(pk=7)
    assert ref.char_field == "é/x"
    assert ref.decimal_field == decimal.Decimal("1234.123456789")
    assert ref.datetime_field == now
    body = transport.published[0].data
    assert body["previous_data"] == {
        "int_field": None, "bool_field": None, "char_field": None, "date_field": None,
        "datetime_field": None, "float_field": None, "uuid_field": None, "decimal_field": None,
        "cqrs_revision": None,
    }
