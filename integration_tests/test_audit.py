"""Audit context end to end (issue 14): a logged-in user's request through AuditMiddleware on the
master changes a row; a real ``cqrs_consume`` replica over RabbitMQ applies it and receives
``meta["audit"]`` (``NoteRef`` records the meta it is given in ``NoteMeta``).

The requests are made with Django's test client in a subprocess of the master service
(``manage.py it_audit_request``, settings ``IT_AUDIT=1``): the full middleware stack (sessions,
authentication, ``AuditMiddleware``) on PostgreSQL, the events published after commit.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from integration_tests.compat.wire import consumer_count
from integration_tests.conftest import Fleet, make_fleet
from integration_tests.harness import OUR_PYTHON, log_text, pg_query, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(params=["thread", "relay"])
def audit_fleet(request: pytest.FixtureRequest, rabbitmq: None, postgres: None) -> Iterator[Fleet]:
    """The master publishes from its after-commit thread, or only through a ``cqrs_relay``
    process started later (the meta comes from the outbox row, not from the request)."""
    yield from make_fleet(
        OUR_PYTHON, OUR_PYTHON, {"IT_AUDIT": "1", "IT_OUTBOX_PUBLISH": request.param}
    )


def _received(fleet: Fleet) -> list[dict]:
    return json.loads(fleet.replica.manage("it_received").stdout)


def test_replica_sees_the_audit_values_of_a_logged_in_users_request(audit_fleet: Fleet) -> None:
    fleet = audit_fleet
    consumer = fleet.replica.start("cqrs_consume", "-w", "1")
    wait_until(lambda: consumer_count(fleet.queue) > 0, 30, message="replica consuming")

    made = json.loads(
        fleet.master.manage(
            "it_audit_request", "--username", "ann", "--request-id", "it-audit-1", "1=hello"
        ).stdout
    )
    assert made["responses"] == [{"status": 200, "request_id": "it-audit-1"}]
    # A second request without X-Request-ID: a generated id, echoed in the response.
    again = json.loads(
        fleet.master.manage("it_audit_request", "--username", "ann", "2=again").stdout
    )
    generated = again["responses"][0]["request_id"]
    assert (
        again["responses"][0]["status"] == 200
        and len(generated) == 32
        and generated != "it-audit-1"
    )
    if fleet.master.env["IT_OUTBOX_PUBLISH"] == "relay":
        assert _received(fleet) == []  # nothing published until the relay runs, in another process
        fleet.master.start("cqrs_relay", "--interval", "0.2")

    seen: list[list[dict]] = []
    try:
        wait_until(
            lambda: len(seen.append(_received(fleet)) or seen[-1]) >= 2,
            30,
            message="replica applied both saves",
        )
    except AssertionError:
        logs = [log_text(p)[-2000:] for p in fleet.master.processes + fleet.replica.processes]
        raise AssertionError(f"{seen[-1:]}\n" + "\n---\n".join(logs)) from None
    assert len(seen[-1]) == 2, (seen[-1], log_text(consumer)[-3000:])
    first, second = sorted(seen[-1], key=lambda r: r["note_id"])
    expected = {
        "user_id": made["user_id"],
        "username": "ann",
        "remote_addr": "192.0.2.10",
        "method": "POST",
        "path": "/audit/note/",
    }
    assert (first["note_id"], first["revision"], first["sync"]) == (1, 0, False)
    # The service's meta_function result is kept, "audit" added.
    assert first["meta"] == {
        "origin": "it-master ☕/",
        "model": "Note",
        "audit": {**expected, "request_id": "it-audit-1"},
    }
    assert (second["note_id"], second["revision"]) == (2, 0)
    assert second["meta"]["audit"] == {**expected, "request_id": generated}

    # Captured at change time in the outbox row. The service sets a correlation_function, which
    # decides the correlation id (the request id is used only without one).
    rows = pg_query(
        fleet.master.env["IT_DB_NAME"],
        "SELECT data FROM dj_cqrs_outbox WHERE cqrs_id = 'it_note' ORDER BY id",
    )
    captured = [json.loads(data) for (data,) in rows]
    assert [c["correlation_id"] for c in captured] == ["it-it_note-1", "it-it_note-2"]
    assert [c["meta"]["audit"]["request_id"] for c in captured] == ["it-audit-1", generated]
