"""Less common replica paths: direct consume, invalid delete PKs, connection errors, timeouts."""

from __future__ import annotations

import contextvars
import logging

import pytest
from django.db import InterfaceError, OperationalError, connection
from django.test.utils import isolate_apps

from dj_cqrs.controller.consumer import consume, route_signal_to_replica_model
from dj_cqrs.core.messages import Action, InboundMessage
from dj_cqrs.core.names import direct_queue
from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.metas import ReplicaMeta
from dj_cqrs.mixins import RawReplicaMixin
from dj_cqrs.replica import context
from dj_cqrs.replica.consumer import handle
from dj_cqrs.replica.timeouts import apply_query_timeout, is_timeout_error, log_timed_out_query
from tests.apps.replica_app.models import FKModelRef, SimplestModelRef, UUIDPkModelRef
from tests.unit.conftest import cqrs_settings_and_transport
from tests.unit.replica.helpers import UPDATED, row, send

pytestmark = pytest.mark.django_db(transaction=True)


def test_consume_of_an_unknown_cqrs_id_logs_and_returns_none(caplog):
    with caplog.at_level(logging.ERROR, logger="django-cqrs"):
        assert consume(TransportPayload("SAVE", "nobody", row(1, 0), 1)) is None
        assert route_signal_to_replica_model("SAVE", "nobody", row(1, 0)) is None
    assert [r.getMessage() for r in caplog.records] == ["No model with such CQRS_ID: nobody."] * 2


def test_direct_queue():
    assert direct_queue("cqrs.replica.simplest", "simplest") == "replica"
    assert direct_queue("cqrs.a.b.simplest", "simplest") == "a.b"
    assert direct_queue("simplest", "simplest") is None
    assert direct_queue("cqrs..simplest", "simplest") is None
    assert direct_queue("cqrs.replica.other", "simplest") is None


def test_retry_header_routing_key_wins_over_the_delivery_routing_key():
    body = TransportPayload("SYNC", "simplest", row(1, 0, name="x"), 1).to_dict()
    from dj_cqrs.encoding import dumps_bytes

    outcome = handle(InboundMessage(dumps_bytes(body), "replica.retry.2000", {"x-cqrs-routing-key": "cqrs.replica.simplest"}))
    assert outcome.payload.queue == "replica"


def test_delete_with_an_invalid_pk_fails(caplog):
    with cqrs_settings_and_transport(replica={"CQRS_MAX_RETRIES": 0}) as transport:
        outcome = send(transport, "DELETE", {"id": "not-a-uuid", "cqrs_revision": 1, "cqrs_updated": UPDATED}, "uuid_pk")
    assert outcome.action is Action.DEAD_LETTER
    assert "CQRS PK is not valid for uuid_pk: 'not-a-uuid'" in caplog.text
    assert UUIDPkModelRef.cqrs_delete({"id": "00000000-0000-0000-0000-000000000001", "cqrs_revision": 1, "cqrs_updated": UPDATED}) is True


def test_foreign_key_attname_and_instances_are_accepted_by_cqrs_save(transport):
    from tests.apps.replica_app.models import PublisherRef

    publisher = PublisherRef.objects.create(id=3, name="p")
    assert FKModelRef.cqrs_save(row(1, 0, publisher_id=3, name="attname")).publisher_id == 3
    assert FKModelRef.cqrs_save(row(2, 0, publisher=publisher, name="instance")).publisher_id == 3


@pytest.mark.parametrize(
    ("error", "action"),
    [
        (InterfaceError("connection already closed"), Action.REQUEUE),
        (OperationalError("could not connect to server: Connection refused"), Action.REQUEUE),
        (OperationalError("database is locked"), Action.RETRY),
    ],
)
def test_database_errors_are_classified(isolated_registries, error, action):
    class Failing(RawReplicaMixin):
        CQRS_ID = "failing_db"

        @classmethod
        def cqrs_save(cls, master_data, previous_data=None, sync=False):
            raise error

    ReplicaMeta.register(Failing)
    outcome = handle(InboundMessage(_body("failing_db")))
    assert outcome.action is action


def test_a_connection_error_while_creating_is_kept_for_redelivery(isolated_registries):
    with isolate_apps("tests.apps.replica_app"):

        class DownRef(SimplestModelRef):
            CQRS_ID = "down_ref"

            @classmethod
            def cqrs_create(cls, sync, mapped_data, previous_data=None, meta=None):
                raise OperationalError("server closed the connection unexpectedly")

            class Meta:
                proxy = True
                app_label = "replica_app"

    outcome = handle(InboundMessage(_body("down_ref")))
    assert (outcome.action, outcome.reason) == (Action.REQUEUE, "database_unavailable")


def _body(cqrs_id):
    from dj_cqrs.encoding import dumps_bytes

    return dumps_bytes(TransportPayload("SAVE", cqrs_id, row(1, 0, name="x"), 1).to_dict())


def test_query_timeout_setting_is_harmless_on_sqlite(caplog):
    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("checks the SQLite behaviour")
    with cqrs_settings_and_transport(replica={"CQRS_QUERY_TIMEOUT": 100, "CQRS_LOG_TIMED_OUT_QUERIES": True, "CQRS_QUERY_LOGGER": "sql-timeouts"}) as transport:
        assert send(transport, "SAVE", row(1, 0, name="a")).status == "applied"
        apply_query_timeout(SimplestModelRef, "default")
        assert is_timeout_error(OperationalError("canceling statement due to statement timeout"), "default") is False
        with caplog.at_level(logging.ERROR, logger="sql-timeouts"):
            log_timed_out_query(OperationalError("timeout"), SimplestModelRef, "default")
    [record] = caplog.records
    assert record.name == "sql-timeouts"
    assert record.getMessage().startswith("CQRS query timeout for simplest:")
    assert connection.vendor == "sqlite"


def test_timed_out_queries_are_not_logged_by_default(caplog):
    with caplog.at_level(logging.ERROR):
        log_timed_out_query(OperationalError("timeout"), SimplestModelRef, "default")
    assert caplog.records == []


def test_context_current_creates_an_empty_report_in_a_fresh_context():
    value = contextvars.Context().run(context.current)
    assert value == context.ApplyReport()
    assert (value.reason, value.status, value.exception, value.direct_sync) == (None, None, None, False)
