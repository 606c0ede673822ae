"""Float columns holding infinities or NaN are published as django-cqrs publishes them
(``Infinity``/``-Infinity``/``NaN`` JSON literals, which ujson and our replicas read), instead of
failing the save (tracked ``previous_data`` in the outbox) or the publish."""

from __future__ import annotations

import math

import pytest
from django.db import connection

from dj_cqrs.testing import use_memory_transport
from tests.apps.master_app.models import BasicFieldsModel
from tests.apps.replica_app.models import BasicFieldsModelRef

pytestmark = pytest.mark.django_db(transaction=True)


def test_infinite_floats_are_published_and_applied():
    with use_memory_transport() as transport:
        obj = BasicFieldsModel.objects.create(int_field=1, float_field=math.inf)
        obj.float_field = -math.inf
        obj.save()  # previous_data holds inf: recorded in the outbox inside the transaction
        transport.join(fail_fast=True)
        bodies = [m.body for m in transport.published]
        data = [m.data for m in transport.published]
    assert b'"float_field":Infinity' in bodies[0] and b'"float_field":-Infinity' in bodies[1]
    assert data[1]["instance_data"]["float_field"] == -math.inf
    assert data[1]["previous_data"]["float_field"] == math.inf
    assert BasicFieldsModelRef.objects.get(int_field=1).float_field == -math.inf


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite stores NaN as NULL")
def test_nan_is_published_and_applied():
    with use_memory_transport() as transport:
        BasicFieldsModel.objects.create(int_field=2, float_field=math.nan)
        transport.join(fail_fast=True)
    assert math.isnan(BasicFieldsModelRef.objects.get(int_field=2).float_field)
