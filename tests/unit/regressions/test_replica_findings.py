"""Reviewer reproductions (replica side)."""
from __future__ import annotations

import io
import json

import pytest

from dj_cqrs.core.messages import InboundMessage
from dj_cqrs.models import Tombstone
from dj_cqrs.replica.consumer import handle
from dj_cqrs.sync.load import load
from tests.apps.replica_app.models import SimplestModelRef

pytestmark = pytest.mark.django_db(transaction=True)


def _msg(signal, pk, rev, updated, **data):
    inst = {"id": pk, "cqrs_revision": rev, "cqrs_updated": updated, **data}
    return InboundMessage(json.dumps({
        "signal_type": signal, "cqrs_id": "simplest", "instance_data": inst, "instance_pk": pk,
        "previous_data": None, "correlation_id": None, "retries": 0, "expires": None, "meta": {},
    }).encode(), routing_key="simplest")


def test_bulk_load_does_not_resurrect_a_deleted_row():
    # The dump was taken at 08:00 (rev 3); the master deleted the row at 09:00 and the replica
    # applied the DELETE (tombstone rev 4) before the operator loaded the dump.
    assert handle(_msg("SAVE", 5, 3, "2026-01-01 08:00:00+00:00", name="x")).action.value == "ack"
    assert handle(_msg("DELETE", 5, 4, "2026-01-01 09:00:00+00:00")).action.value == "ack"
    assert Tombstone.objects.filter(object_pk="5").exists()
    dump = "simplest\n" + json.dumps({"id": 5, "name": "x", "cqrs_revision": 3, "cqrs_updated": "2026-01-01 08:00:00+00:00"}) + "\n"
    load(io.StringIO(dump))
    assert not SimplestModelRef.objects.filter(pk=5).exists(), "bulk load resurrected a row the replica knows was deleted"


def test_consumer_keeps_its_database_connection_between_messages():
    from django.db import connection
    pids = []
    for i in range(5):
        assert handle(_msg("SAVE", 100 + i, 0, "2026-01-01 08:00:00+00:00", name="x")).action.value == "ack"
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()" if connection.vendor == "postgresql" else "SELECT 1")
            pids.append(cursor.fetchone()[0] if connection.vendor == "postgresql" else id(connection.connection))
    assert len(set(pids)) == 1, f"{len(set(pids))} distinct database sessions for 5 messages (CONN_MAX_AGE=0)"
