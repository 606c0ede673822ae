"""cqrs_status and read-your-writes over the real RabbitMQ and PostgreSQL, both services on dj_cqrs:

* the status of a replica (consumers, unacknowledged messages from the management API when it
  is enabled, dead letters) and its exit codes with the broker cut through the test proxy (3), a
  dead letter past --max-dead-letters (1), a database that cannot be reached (4);
* the master's outbox backlog: an event left unpublished while the broker is cut, reported with its
  age, failures and last error, past --max-outbox-age (1);
* ``wait_for`` in the replica service: returns once a real ``cqrs_consume`` applied the change
  (woken by the consumer's NOTIFY), times out (False) while the consumer is stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from integration_tests.conftest import Fleet, make_fleet
from integration_tests.harness import (
    OUR_PYTHON,
    RABBIT_HOST,
    RABBIT_PORT,
    Service,
    log_text,
    publish_raw,
    require,
    stop_process,
    wait_until,
)
from integration_tests.proxy import TcpProxy


@pytest.fixture
def proxied_fleet(rabbitmq: None, postgres: None) -> Iterator[tuple[Fleet, TcpProxy]]:
    """Master and replica reaching RabbitMQ through a proxy the test can cut."""
    with TcpProxy(RABBIT_HOST, RABBIT_PORT) as proxy:
        url = (
            f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2F?connection_attempts=1&socket_timeout=2"
        )
        env = {"IT_CQRS_URL": url, "IT_MASTER_CQRS_URL": url, "IT_PUBLISH_RETRIES": "0"}
        for fleet in make_fleet(OUR_PYTHON, OUR_PYTHON, extra_env=env):
            yield fleet, proxy


def _status(service: Service, *args: str) -> tuple[int, dict]:
    result = service.manage("cqrs_status", "--json", *args, check=False, timeout=60)
    assert result.stdout.strip(), result.stderr
    return result.returncode, json.loads(result.stdout)


def _consumers(service: Service) -> int:
    code, data = _status(service, "--replica-only")
    queue = (data.get("replica") or {}).get("queue") or {}
    return int(queue.get("consumers") or 0) if code == 0 else 0


def _execute(dbname: str, sql: str) -> None:
    import psycopg2

    from integration_tests.harness import PG_HOST, PG_PORT

    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname=dbname)
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql)
    finally:
        conn.close()


def _with_unacked(service: Service) -> dict | None:
    queue = _status(service)[1]["replica"]["queue"]
    return queue if queue["unacked"] is not None else None


def _management_api() -> bool:
    import base64
    import urllib.request

    request = urllib.request.Request("http://127.0.0.1:15672/api/overview")
    request.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    try:
        with urllib.request.urlopen(request, timeout=2):
            return True
    except OSError:
        return False


def test_status_exit_codes_broker_cut_dead_letters_and_outbox_backlog(proxied_fleet):
    fleet, proxy = proxied_fleet
    consumer = fleet.replica.start("cqrs_consume")
    wait_until(lambda: _consumers(fleet.replica) > 0, 30, message="replica consuming")

    code, data = _status(fleet.replica)
    assert code == 0, data
    queue = data["replica"]["queue"]
    assert queue["name"] == fleet.queue and queue["exists"] is True
    assert queue["ready"] == 0 and queue["consumers"] == 1
    assert data["replica"]["dead_letters"] == 0
    if _management_api():  # the management plugin is optional: without it unacked stays unknown
        # (a new queue's figures appear with the API's next statistics sample, within seconds)
        queue = wait_until(
            lambda: _with_unacked(fleet.replica), 20, message="management API figures"
        )
        assert queue["unacked"] == 0 and queue["lag"] == 0.0
    else:
        assert queue["unacked"] is None and "management API" in " ".join(data["notes"])

    # a malformed message is dead-lettered by the consumer: past --max-dead-letters 0
    publish_raw(fleet.exchange, "it_product", b"not json at all")
    wait_until(
        lambda: _status(fleet.replica)[1]["replica"]["dead_letters"] == 1, 30, message="dead letter"
    )
    code, data = _status(fleet.replica, "--max-dead-letters", "0")
    assert code == 1
    assert [b["threshold"] for b in data["breaches"]] == ["max_dead_letters"]
    assert _status(fleet.replica, "--max-dead-letters", "1")[0] == 0

    # the broker cut: unreachable, exit 3 (text report)
    proxy.cut()
    started = time.monotonic()
    result = fleet.replica.manage("cqrs_status", check=False, timeout=60)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "UNREACHABLE broker" in result.stdout
    assert time.monotonic() - started < 30

    # the master saves while the broker is cut: the event stays in the outbox, with its failure
    fleet.master.scenario([{"op": "create", "id": 1, "fields": {"name": "during the cut"}}])
    code, data = _status(fleet.master)
    assert code == 0, data  # young backlog: below the default max_outbox_age (300 s)
    [row] = [item for item in data["outbox"] if item["cqrs_id"] == "it_product"]
    assert row["pending"] == 1 and row["oldest_pending_age"] < 60
    assert row["failed"] == 1 and "PublishFailed" in row["last_error"], row
    # an old backlog: the event was recorded 10 minutes ago
    _execute(
        fleet.master.env["IT_DB_NAME"],
        "UPDATE dj_cqrs_outbox SET created_at = now() - interval '600 seconds'",
    )
    code, data = _status(fleet.master)
    assert code == 1
    [breach] = data["breaches"]
    assert breach["threshold"] == "max_outbox_age" and 599 <= breach["value"] < 700
    assert _status(fleet.master, "--max-outbox-age", "3600")[0] == 0

    # a database that cannot be reached: exit 4
    dead_db = Service(
        "master", OUR_PYTHON, {k: v for k, v in fleet.master.env.items() if k.startswith("IT_")}
    )
    dead_db.env["IT_DB_PORT"] = "1"
    result = dead_db.manage("cqrs_status", "--master-only", check=False, timeout=60)
    assert result.returncode == 4, result.stdout + result.stderr

    # the broker back: the replica is healthy again, the backlog is published by the relay
    proxy.restore()
    relay = fleet.master.start("cqrs_relay")
    wait_until(
        lambda: _status(fleet.master)[0] == 0
        and _status(fleet.master)[1]["outbox"][0]["pending"] == 0,
        30,
    )
    wait_until(
        lambda: "1" in fleet.replica.state().get("it_product", {}),
        30,
        message="replica applied the backlog",
    )
    assert stop_process(relay) == 0, log_text(relay)
    assert stop_process(consumer) == 0, log_text(consumer)


WAIT = (
    "import time; from dj_cqrs.replica import wait_for; t = time.monotonic();"
    " r = wait_for('it_product', {pk}, {revision}, timeout={timeout});"
    " print('RESULT', r, round(time.monotonic() - t, 3))"
)


def _result(text: str) -> tuple[str, float]:
    line = [line for line in text.splitlines() if line.startswith("RESULT ")][-1]
    _, value, elapsed = line.split()
    return value, float(elapsed)


def test_wait_for_with_a_real_consumer(fleet):
    require(RABBIT_HOST, RABBIT_PORT, "RabbitMQ")
    consumer = fleet.replica.start("cqrs_consume")
    wait_until(lambda: _consumers(fleet.replica) > 0, 30, message="replica consuming")
    fleet.master.scenario([{"op": "create", "id": 1, "fields": {"name": "v0"}}])
    wait_until(lambda: "1" in fleet.replica.state().get("it_product", {}), 30, message="created")

    # a waiter for revision 1, started before the master's update
    waiter = fleet.replica.start("shell", "-c", WAIT.format(pk=1, revision=1, timeout=30))
    time.sleep(2)  # Django started, the wait is listening
    assert waiter.poll() is None, log_text(waiter)
    updated_at = time.monotonic()
    state = fleet.master.scenario([{"op": "update", "id": 1, "fields": {"name": "v1"}}])
    assert state["it_product"]["1"]["cqrs_revision"] == 1
    assert waiter.wait(30) == 0, log_text(waiter)
    returned_after = time.monotonic() - updated_at
    value, elapsed = _result(log_text(waiter))
    assert value == "True" and elapsed < 30
    assert returned_after < 10
    assert fleet.replica.state()["it_product"]["1"]["name"] == "v1"

    # an already applied revision: at once
    result = fleet.replica.manage("shell", "-c", WAIT.format(pk=1, revision=0, timeout=5))
    value, elapsed = _result(result.stdout)
    assert value == "True" and elapsed < 1

    # the consumer stopped: the next revision never arrives
    assert stop_process(consumer) == 0, log_text(consumer)
    fleet.master.scenario([{"op": "update", "id": 1, "fields": {"name": "v2"}}])
    result = fleet.replica.manage("shell", "-c", WAIT.format(pk=1, revision=2, timeout=3))
    value, elapsed = _result(result.stdout)
    assert value == "False" and 3 <= elapsed < 6
    assert fleet.replica.state()["it_product"]["1"]["name"] == "v1"
