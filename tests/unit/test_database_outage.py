"""Database outages (dj_cqrs.database): which errors are outages, and how the consumer, the batched
apply, the sync commands, the bulk load and the relay wait through one."""

from __future__ import annotations

import io
import json
import logging
import socket
import time

import psycopg2
import psycopg2.errors
import pytest
from django.db import (
    DataError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
    connections,
    transaction,
)

from dj_cqrs.core.messages import Action, InboundMessage
from dj_cqrs.database import Outage, call_through_outages, connect, is_outage, sqlstate
from dj_cqrs.exceptions import DatabaseUnavailable
from dj_cqrs.process.lifecycle import StopFlag
from dj_cqrs.replica.batch import handle_batch_through_outages
from dj_cqrs.replica.consumer import handle
from dj_cqrs.replica.failures import is_connection_lost
from tests.apps.replica_app.models import SimplestModelRef

NOT_ACCEPTING = (
    'connection to server at "127.0.0.1", port 5432 failed: FATAL:  database "shop_replica" is not currently'
    " accepting connections\n"
)


def _pg_error(code: str | None, message: str = "boom") -> psycopg2.Error:
    """A psycopg2 error as the driver raises it: its class for the SQLSTATE, with ``pgcode`` set."""
    klass = psycopg2.errors.lookup(code) if code else psycopg2.OperationalError
    error = klass(message)
    if code:
        error.__setstate__({"pgcode": code, "pgerror": message})
    return error


def _as_django(error: BaseException, klass: type[Exception] = OperationalError) -> Exception:
    """What Django raises: its own class, ``from`` the driver's error."""
    try:
        try:
            raise error
        except Exception as driver_error:
            raise klass(*driver_error.args) from driver_error
    except Exception as wrapped:
        return wrapped


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _connect_error() -> psycopg2.OperationalError:
    """The real error of connecting to a loopback port nobody listens on."""
    with pytest.raises(psycopg2.OperationalError) as info:
        psycopg2.connect(host="127.0.0.1", port=_closed_port(), user="postgres", dbname="x", connect_timeout=3)
    return info.value


# -- the classification ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "outage"),
    [
        ("08000", True),  # connection_exception
        ("08001", True),  # sqlclient_unable_to_establish_sqlconnection
        ("08003", True),  # connection_does_not_exist
        ("08006", True),  # connection_failure
        ("57P01", True),  # admin_shutdown: terminating connection due to administrator command
        ("57P02", True),  # crash_shutdown
        ("57P03", True),  # cannot_connect_now: starting up, shutting down, in recovery
        ("53300", True),  # too_many_connections
        ("57014", False),  # query_canceled: a statement timeout is not an outage
        ("23505", False),  # unique_violation
        ("23503", False),  # foreign_key_violation
        ("22P02", False),  # invalid_text_representation
        ("22001", False),  # string_data_right_truncation
        ("40001", False),  # serialization_failure
        ("40P01", False),  # deadlock_detected
        ("55P03", False),  # lock_not_available
        ("42P01", False),  # undefined_table
        ("53100", False),  # disk_full: not a connection problem
        ("25P02", False),  # in_failed_sql_transaction
    ],
)
def test_sqlstates(code, outage):
    error = _pg_error(code)
    assert sqlstate(error) == code
    assert is_outage(error) is outage
    django_class = OperationalError if isinstance(error, psycopg2.OperationalError) else IntegrityError
    wrapped = _as_django(error, django_class)
    assert is_outage(wrapped) is outage
    assert is_connection_lost(wrapped) is outage  # the consumer's name for the same question


def test_psycopg2_errors_built_without_their_code_are_classified_by_class():
    assert is_outage(psycopg2.errors.AdminShutdown("terminating connection due to administrator command"))
    assert is_outage(psycopg2.errors.CannotConnectNow("the database system is starting up"))
    assert not is_outage(psycopg2.errors.QueryCanceled("canceling statement due to statement timeout"))
    assert not is_outage(psycopg2.errors.UniqueViolation("duplicate key value violates unique constraint"))


def test_connect_failures_are_outages():
    refused = _connect_error()
    assert refused.pgcode is None
    assert is_outage(refused)
    assert is_outage(_as_django(refused))
    # libpq reports a FATAL answer at connection time without a SQLSTATE: every one is an outage.
    for text in (
        NOT_ACCEPTING,
        "connection to server failed: FATAL:  the database system is starting up",
        "connection to server failed: FATAL:  the database system is shutting down",
        "connection to server failed: FATAL:  the database system is in recovery mode",
        "connection to server failed: FATAL:  sorry, too many clients already",
        "connection to server failed: FATAL:  password authentication failed for user \"app\"",
        "server closed the connection unexpectedly\n\tThis probably means the server terminated abnormally",
    ):
        assert is_outage(_as_django(psycopg2.OperationalError(text))), text
    assert is_outage(_as_django(psycopg2.InterfaceError("connection already closed"), InterfaceError))


def test_errors_without_driver_detail():
    assert is_outage(DatabaseUnavailable("database 'default' cannot be reached"))
    assert is_outage(OperationalError(NOT_ACCEPTING))
    assert is_outage(OperationalError("FATAL: terminating connection due to administrator command"))
    assert is_outage(InterfaceError("connection already closed"))
    assert not is_outage(OperationalError("canceling statement due to statement timeout"))
    assert not is_outage(IntegrityError("duplicate key value"))
    assert not is_outage(DataError("value too long for type character varying(5)"))
    assert not is_outage(ProgrammingError("relation \"connection refused\" does not exist"))
    assert not is_outage(ValueError("connection refused"))


def test_the_first_decisive_error_of_a_chain_wins():
    timeout = _as_django(_pg_error("57014", "canceling statement due to statement timeout"))
    try:
        raise RuntimeError("a handler gave up") from timeout
    except RuntimeError as outer:
        assert not is_outage(outer)
    lost = _as_django(_pg_error("57P01"))
    try:
        raise RuntimeError("a handler gave up") from lost
    except RuntimeError as outer:
        assert is_outage(outer)


def test_mysql_error_numbers():
    mysql_operational = type("OperationalError", (Exception,), {"__module__": "MySQLdb._exceptions"})
    assert is_outage(mysql_operational(2006, "MySQL server has gone away"))
    assert is_outage(mysql_operational(1040, "Too many connections"))
    assert not is_outage(mysql_operational(1205, "Lock wait timeout exceeded; try restarting transaction"))
    assert not is_outage(mysql_operational(3024, "Query execution was interrupted, maximum statement execution time exceeded"))


# -- connect() -------------------------------------------------------------------------------------


@pytest.fixture
def database_down(monkeypatch):
    """The default database refuses new connections (the real psycopg2 error, wrapped as Django
    wraps it) until ``state["down"]`` is set to False; then the connection opens again."""
    conn = connections["default"]
    conn.ensure_connection()
    real = conn.connection
    refused = _as_django(psycopg2.OperationalError(NOT_ACCEPTING))
    state = {"down": True, "attempts": 0}

    def ensure_connection():
        state["attempts"] += 1
        if state["down"]:
            raise refused
        conn.connection = real

    monkeypatch.setattr(conn, "ensure_connection", ensure_connection)
    monkeypatch.setattr(conn, "connection", None)
    yield state
    conn.connection = real


@pytest.mark.django_db
def test_connect_raises_database_unavailable(database_down):
    with pytest.raises(DatabaseUnavailable) as info:
        connect("default")
    assert "not currently accepting connections" in str(info.value)
    assert is_outage(info.value)
    database_down["down"] = False
    connect("default")
    assert connections["default"].connection is not None


# -- the consumer ----------------------------------------------------------------------------------


def _message(pk: int, retries: int = 0) -> InboundMessage:
    body = {
        "signal_type": "SAVE",
        "cqrs_id": "simplest",
        "instance_data": {"id": pk, "name": f"n{pk}", "cqrs_revision": 0, "cqrs_updated": "2026-01-01 00:00:00+00:00"},
        "previous_data": None,
        "instance_pk": pk,
        "correlation_id": None,
        "retries": retries,
        "expires": None,
    }
    return InboundMessage(json.dumps(body).encode(), "simplest", {})


@pytest.fixture
def retry_hook_calls(monkeypatch):
    calls: list[int] = []
    original = SimplestModelRef.should_retry_cqrs

    def should_retry(current_retry, exception=None):
        calls.append(current_retry)
        return original(current_retry, exception)

    monkeypatch.setattr(SimplestModelRef, "should_retry_cqrs", staticmethod(should_retry))
    return calls


@pytest.mark.django_db(transaction=True)
def test_refused_connection_keeps_the_message_without_a_retry(database_down, retry_hook_calls):
    outcome = handle(_message(1))
    assert (outcome.action, outcome.reason) == (Action.REQUEUE, "database_unavailable")
    assert "not currently accepting connections" in outcome.detail
    assert retry_hook_calls == []  # no retry counted, the model's retry policy is not even asked
    database_down["down"] = False
    assert handle(_message(1)).action is Action.ACK
    assert SimplestModelRef.objects.get(pk=1).name == "n1"


@pytest.mark.django_db(transaction=True)
def test_a_batch_is_held_through_an_outage_with_one_log_line(database_down, retry_hook_calls, caplog):
    messages = [_message(pk) for pk in range(1, 6)]
    waits: list[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        if len(waits) == 4:
            database_down["down"] = False  # back after the 4th back-off
        return False

    with caplog.at_level(logging.DEBUG):
        outcomes = handle_batch_through_outages(messages, wait)
    assert [o.action for o in outcomes] == [Action.ACK] * 5
    assert sorted(SimplestModelRef.objects.values_list("pk", flat=True)) == [1, 2, 3, 4, 5]
    assert retry_hook_calls == []
    assert len(waits) == 4 and waits[0] < waits[-1]  # exponential back-off
    assert database_down["attempts"] >= 5
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings  # one line for the outage, none per held message
    assert warnings[0].startswith("Replica database unavailable (DatabaseUnavailable: database 'default' cannot be reached")
    assert "not currently accepting connections" in warnings[0]
    assert "5 message(s) held unacknowledged" in warnings[0]
    back = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Replica database available again")]
    assert len(back) == 1 and "(4 attempt(s))" in back[0]


@pytest.mark.django_db(transaction=True)
def test_a_held_batch_stays_unsettled_when_the_worker_stops(database_down):
    outcomes = handle_batch_through_outages([_message(1), _message(2)], lambda seconds: True)
    assert [(o.action, o.reason) for o in outcomes] == [(Action.REQUEUE, "database_unavailable")] * 2


# -- waiting through outages -----------------------------------------------------------------------


class _NoSleep(StopFlag):
    def __init__(self, stop_after: int | None = None) -> None:
        super().__init__()
        self.waits: list[float] = []
        self.stop_after = stop_after

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        return self.stop_after is not None and len(self.waits) >= self.stop_after


@pytest.mark.django_db(transaction=True)
def test_call_through_outages():
    failures = [_as_django(_pg_error("57P03")), _as_django(_connect_error())]

    def work():
        if failures:
            raise failures.pop(0)
        return "done"

    stop = _NoSleep()
    assert call_through_outages(work, what="test", using="default", stop=stop) == "done"
    assert len(stop.waits) == 2

    with pytest.raises(IntegrityError):  # a data error is raised at once
        call_through_outages(lambda: (_ for _ in ()).throw(IntegrityError("dup")), what="test", stop=_NoSleep())

    stopping = _NoSleep(stop_after=1)
    with pytest.raises(OperationalError):  # stopped while waiting: the outage's error
        call_through_outages(lambda: (_ for _ in ()).throw(_as_django(_connect_error())), what="test", stop=stopping)

    with transaction.atomic(), pytest.raises(OperationalError):  # a transaction cannot be waited out
        call_through_outages(
            lambda: (_ for _ in ()).throw(_as_django(_connect_error())), what="test", using="default", stop=_NoSleep()
        )


def test_outage_logs_once_when_it_starts_and_once_when_it_ends(caplog):
    outage = Outage("Test database", log=logging.getLogger("test.outage"))
    with caplog.at_level(logging.DEBUG, logger="test.outage"):
        delays = [outage.failed(OperationalError(NOT_ACCEPTING)) for _ in range(6)]
        outage.recovered()
        outage.recovered()
    assert delays == sorted(delays) or delays[-1] > delays[0]
    levels = [r.levelname for r in caplog.records]
    assert levels == ["WARNING"] + ["DEBUG"] * 5 + ["INFO"]
    assert not outage.active


@pytest.mark.django_db(transaction=True)
def test_bulk_load_waits_through_an_outage(monkeypatch, caplog):
    from dj_cqrs.sync import load

    real = load.load_batch
    failures = [_as_django(_pg_error("57P01", "terminating connection due to administrator command"))]

    def flaky(*args, **kwargs):
        if failures:
            raise failures.pop(0)
        return real(*args, **kwargs)

    monkeypatch.setattr(load, "load_batch", flaky)
    lines = ["simplest"] + [json.dumps({"id": pk, "name": f"n{pk}", "cqrs_revision": 0, "cqrs_updated": "2026-01-01 00:00:00+00:00"}) for pk in range(1, 4)]
    with caplog.at_level(logging.INFO, logger="django-cqrs.sync"):
        report = load.load(io.StringIO("\n".join(lines) + "\n"), workers=0)
    assert (report.loaded, report.failed) == (3, 0)
    assert sorted(SimplestModelRef.objects.values_list("pk", flat=True)) == [1, 2, 3]
    assert [r.levelname for r in caplog.records if r.name == "django-cqrs.sync"] == ["WARNING", "INFO"]


@pytest.mark.django_db(transaction=True)
def test_relay_once_waits_through_an_outage(monkeypatch, caplog):
    from dj_cqrs.master.outbox import publishing
    from dj_cqrs.master.relay import Relay

    failures = [_as_django(_connect_error()), _as_django(_pg_error("57P03", "the database system is starting up"))]
    calls = []

    def claim_and_publish(using, limit, min_age=0.0):
        calls.append(using)
        if failures:
            raise failures.pop(0)
        return 0

    monkeypatch.setattr(publishing, "claim_and_publish", claim_and_publish)
    stop = _NoSleep()
    relay = Relay(databases=["default"], min_age=0, stop=stop)
    with caplog.at_level(logging.INFO, logger="django-cqrs.relay"):
        assert relay.run_until_done() == 0
    assert calls == ["default"] * 3  # one attempt per back-off step, not one per wake-up
    assert stop.waits and max(stop.waits) <= 1.2
    assert relay.waiting() == []
    assert [r.levelname for r in caplog.records if r.name == "django-cqrs.relay"] == ["WARNING", "INFO"]


@pytest.mark.django_db(transaction=True)
def test_relay_loop_waits_through_an_outage_and_keeps_housekeeping_off_that_database(monkeypatch, caplog):
    from dj_cqrs.master.outbox import maintenance, publishing
    from dj_cqrs.master.relay import Relay

    failures = [_as_django(_connect_error()) for _ in range(3)]
    housekept: list[str] = []

    def claim_and_publish(using, limit, min_age=0.0):
        if failures:
            raise failures.pop(0)
        return 0

    def oldest_pending_age(using):
        housekept.append(using)
        return None

    monkeypatch.setattr(publishing, "claim_and_publish", claim_and_publish)
    monkeypatch.setattr(maintenance, "oldest_pending_age", oldest_pending_age)

    class StopWhenBack(StopFlag):
        def __init__(self) -> None:
            super().__init__()
            self.waits: list[float] = []

        def wait(self, seconds: float) -> bool:
            self.waits.append(seconds)
            if relay.waiting():
                time.sleep(seconds)  # the back-off (3.5 s in all)
            else:
                self.set()  # a pass found the database back
            return self.is_set()

    stop = StopWhenBack()
    relay = Relay(databases=["default"], min_age=0, interval=5.0, stop=stop)
    with caplog.at_level(logging.INFO, logger="django-cqrs.relay"):
        relay.run()
    relay_lines = [r for r in caplog.records if r.name == "django-cqrs.relay"]
    outage_lines = [r.levelname for r in relay_lines if "available" in r.getMessage()]
    assert outage_lines == ["WARNING", "INFO"]  # one when it starts, one when it ends
    assert not [r for r in relay_lines if r.levelno >= logging.ERROR]  # no "relay pass failed"
    assert len(stop.waits) >= 3 and max(stop.waits[:-1]) < 5.0  # the back-off, not the interval
    assert stop.waits[-1] == 5.0
    assert housekept == []  # no alert query against the database while it was out
