"""``cqrs_consume`` as an operator runs it: the supervisor process, its worker processes, signals.

The master and replica services run as subprocesses on PostgreSQL and RabbitMQ. The databases are
created and migrated once for the module (and emptied before each test); every test has its own
exchange and queue. Worker processes are found as the supervisor's children in ``/proc``. Every
wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration_tests.compat.wire import consumer_count, message_count
from integration_tests.conftest import Fleet
from integration_tests.failure_helpers import child_pids
from integration_tests.harness import (
    OUR_PYTHON,
    PG_HOST,
    PG_PORT,
    RABBIT_HOST,
    RABBIT_PORT,
    SERVICES,
    Service,
    log_text,
    pg_database,
    pg_query,
    rabbit_cleanup,
    require,
    stop_process,
    unique,
    wait_until,
)

SIGINT_TIMEOUT = 5
SIGKILL_TIMEOUT = 1


@pytest.fixture(scope="module")
def databases() -> Iterator[tuple[str, str]]:
    require(RABBIT_HOST, RABBIT_PORT, "RabbitMQ")
    require(PG_HOST, PG_PORT, "PostgreSQL")
    run = unique("sup")
    with pg_database(f"{run}_master") as master_db, pg_database(f"{run}_replica") as replica_db:
        Service("master", OUR_PYTHON, {"IT_DB_NAME": master_db}).migrate()
        Service("replica", OUR_PYTHON, {"IT_DB_NAME": replica_db}).migrate()
        yield master_db, replica_db


def _empty(dbname: str) -> None:
    """Empty every table of a service database (the schema stays migrated)."""
    import psycopg2

    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname=dbname)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                " AND tablename NOT IN ('django_migrations', 'django_content_type')"
            )
            tables = [row[0] for row in cur.fetchall()]
            if tables:
                cur.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE")
    finally:
        conn.close()


@pytest.fixture
def fleet(databases) -> Iterator[Fleet]:
    master_db, replica_db = databases
    _empty(master_db)
    _empty(replica_db)
    run = unique("sup")
    exchange, queue = f"cqrs_{run}", f"replica_{run}"
    base = {"IT_CQRS_EXCHANGE": exchange, "IT_CQRS_QUEUE": queue, "IT_LOG_LEVEL": "INFO"}
    master = Service("master", OUR_PYTHON, {**base, "IT_DB_NAME": master_db})
    replica = Service("replica", OUR_PYTHON, {**base, "IT_DB_NAME": replica_db})
    try:
        yield Fleet(master, replica, exchange, queue)
    finally:
        master.stop_all()
        replica.stop_all()
        rabbit_cleanup(exchange, [queue, f"dead_letter_{queue}"])


def workers(supervisor: subprocess.Popen[bytes]) -> set[int]:
    return set(child_pids(supervisor.pid))


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def replica_rows(fleet: Fleet, table: str = "catalog_productref") -> int:
    return int(pg_query(fleet.replica.env["IT_DB_NAME"], f"SELECT count(*) FROM {table}")[0][0])


def creates(ids: range, **fields: object) -> list[dict[str, object]]:
    return [{"op": "create", "id": i, "fields": {"name": f"p{i}", **fields}} for i in ids]


def wait_new_workers(supervisor: subprocess.Popen[bytes], count: int, old: set[int], timeout: float = 30) -> set[int]:
    """Wait for ``count`` workers none of which is in ``old``, all consuming."""

    def check() -> set[int] | None:
        current = workers(supervisor)
        return current if len(current) == count and not current & old else None

    pids = wait_until(check, timeout, message=f"{count} new worker(s); log:\n{log_text(supervisor)[-3000:]}")
    return pids  # type: ignore[no-any-return]


def wait_consuming(queue: str, count: int, timeout: float = 30) -> None:
    wait_until(lambda: consumer_count(queue) == count, timeout, message=f"{count} consumer(s) on {queue}")


def wait_converged(fleet: Fleet, expected: dict[str, object], rows: int, timeout: float = 60) -> None:
    wait_until(lambda: replica_rows(fleet) == rows, timeout, message=f"{rows} replica rows")
    wait_until(lambda: fleet.replica.state() == expected, 30, interval=1, message="replica equals master")


def terminate(supervisor: subprocess.Popen[bytes]) -> int:
    """SIGTERM to the supervisor alone (not its process group), as a process manager sends it."""
    os.kill(supervisor.pid, signal.SIGTERM)
    try:
        return supervisor.wait(SIGINT_TIMEOUT + SIGKILL_TIMEOUT + 15)
    except subprocess.TimeoutExpired:
        stop_process(supervisor, signal.SIGKILL)
        raise AssertionError(f"the supervisor did not exit after SIGTERM; log:\n{log_text(supervisor)[-3000:]}")


def test_workers_are_supervised_and_sigterm_stops_cleanly(fleet):
    supervisor = fleet.replica.start(
        "cqrs_consume", "-w", "2",
        "--sigint-timeout", str(SIGINT_TIMEOUT), "--sigkill-timeout", str(SIGKILL_TIMEOUT),
    )
    wait_consuming(fleet.queue, 2)
    first = workers(supervisor)
    assert len(first) == 2, first

    state = fleet.master.scenario(creates(range(1, 21)))
    wait_converged(fleet, state, 20)

    # A worker killed outright is replaced; the other one is left alone.
    victim, survivor = sorted(first)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: survivor in workers(supervisor) and victim not in workers(supervisor)
               and len(workers(supervisor)) == 2, 30, message="the killed worker replaced")
    wait_consuming(fleet.queue, 2)
    assert supervisor.poll() is None
    state = fleet.master.scenario(creates(range(21, 41)) + [{"op": "update", "id": 5, "fields": {"name": "five"}}])
    wait_converged(fleet, state, 40)
    assert "exited with code -9" in log_text(supervisor)

    # SIGTERM while a stream of messages is being applied.
    fleet.master.scenario([{"op": "bulk_create", "items": [{"id": i, "fields": {"name": f"bulk {i}"}} for i in range(1000, 1400)]}])
    wait_until(lambda: replica_rows(fleet) > 40, 30, interval=0.05, message="the stream being applied")
    before = workers(supervisor)
    assert terminate(supervisor) == 0, log_text(supervisor)[-3000:]
    assert not [pid for pid in before if alive(pid)], "workers outlived the supervisor"
    assert consumer_count(fleet.queue) == 0

    # Nothing was lost or half-applied: a new consumer brings the replica to the master's state,
    # including what was published while nothing consumed.
    state = fleet.master.scenario(creates(range(41, 51)) + [{"op": "delete", "id": 1}])
    replacement = fleet.replica.start("cqrs_consume")
    wait_converged(fleet, state, 40 + 400 + 10 - 1)
    assert terminate(replacement) == 0


@contextlib.contextmanager
def worker_stuck_in_the_database(fleet: Fleet, supervisor: subprocess.Popen[bytes]) -> Iterator[dict[str, object]]:
    """Product 1 applied, then an update of it that the worker cannot finish: the test holds the
    replica row's lock, so the worker waits inside a database call, where it cannot react to
    SIGINT. Yields the master state; the lock is released on exit."""
    import psycopg2

    wait_consuming(fleet.queue, 1)
    fleet.master.scenario(creates(range(1, 2)))
    wait_until(lambda: replica_rows(fleet) == 1, 30, message="the product applied")
    db = fleet.replica.env["IT_DB_NAME"]
    lock = psycopg2.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname=db)
    try:
        with lock.cursor() as cur:
            cur.execute("SELECT id FROM catalog_productref WHERE id = 1 FOR UPDATE")
        state = fleet.master.scenario([{"op": "update", "id": 1, "fields": {"name": "after the kill"}}])
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'"
        wait_until(lambda: pg_query(db, waiting, [db])[0][0] == 1, 30, message="the worker blocked on the lock")
        yield state
    finally:
        lock.rollback()
        lock.close()


def _redelivered_after_restart(fleet: Fleet, state: dict[str, object]) -> None:
    # The killed worker neither committed nor acknowledged: the update is redelivered and applied.
    assert fleet.replica.state()["it_product"]["1"]["name"] == "p1"
    replacement = fleet.replica.start("cqrs_consume")
    wait_until(lambda: fleet.replica.state() == state, 30, interval=1, message="the update applied after restart")
    assert terminate(replacement) == 0


def test_a_worker_stuck_past_sigint_timeout_is_killed_and_its_message_redelivered(fleet):
    supervisor = fleet.replica.start("cqrs_consume", "--sigint-timeout", "1", "--sigkill-timeout", "1")
    with worker_stuck_in_the_database(fleet, supervisor) as state:
        stuck = workers(supervisor)
        assert terminate(supervisor) == 0, log_text(supervisor)[-3000:]
        assert not [pid for pid in stuck if alive(pid)]
        assert "did not stop in 1.0s: killing it" in log_text(supervisor)
    _redelivered_after_restart(fleet, state)


def test_sigterm_during_a_restart_starts_no_new_workers(fleet):
    supervisor = fleet.replica.start("cqrs_consume", "--sigint-timeout", "4", "--sigkill-timeout", "1")
    with worker_stuck_in_the_database(fleet, supervisor) as state:
        stuck = workers(supervisor)
        os.kill(supervisor.pid, signal.SIGHUP)  # restart: waits up to 4 s for the stuck worker
        wait_until(lambda: "received SIGHUP" in log_text(supervisor), 10, interval=0.05, message="SIGHUP handled")
        # The supervisor acts on its flags every 0.2 s: after 1 s it is inside the restart, waiting.
        time.sleep(1.0)
        assert terminate(supervisor) == 0, log_text(supervisor)[-3000:]
        assert not [pid for pid in stuck if alive(pid)]
    log = log_text(supervisor)
    assert "did not stop in 4.0s: killing it" in log
    assert log.count("CQRS worker process") == 1, log[-3000:]  # only the first worker was started
    _redelivered_after_restart(fleet, state)


def test_workers_stop_when_the_supervisor_is_killed(fleet):
    supervisor = fleet.replica.start("cqrs_consume", "-w", "2")
    wait_consuming(fleet.queue, 2)
    orphans = workers(supervisor)
    os.kill(supervisor.pid, signal.SIGKILL)  # e.g. the OOM killer: no chance to stop its workers
    supervisor.wait(10)
    try:
        wait_until(lambda: not [pid for pid in orphans if alive(pid)], 15, message="orphaned workers to stop")
    finally:
        for pid in orphans:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert consumer_count(fleet.queue) == 0
    assert "its supervisor is gone; stopping" in log_text(supervisor)
    # Their queue kept what was published meanwhile.
    state = fleet.master.scenario(creates(range(1, 11)))
    replacement = fleet.replica.start("cqrs_consume")
    wait_converged(fleet, state, 10)
    assert terminate(replacement) == 0


def test_cqrs_id_binds_only_that_id(fleet):
    supervisor = fleet.replica.start("cqrs_consume", "--cqrs-id", "it_product")
    wait_consuming(fleet.queue, 1)
    out = subprocess.run(
        ["rabbitmqctl", "list_bindings", "-s", "source_name", "destination_name", "routing_key"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout
    dead = f"dead_letter_{fleet.queue}"
    bindings = {
        tuple(line.split("\t")[1:3])
        for line in out.splitlines()
        if line.split("\t")[0] == fleet.exchange
    }
    assert bindings == {
        (fleet.queue, "it_product"),
        (fleet.queue, f"cqrs.{fleet.queue}.it_product"),
        (dead, f"cqrs.{dead}.it_product"),
    }

    # A tag published before a product: the product arrives, the tag was routed nowhere.
    tag = "2b0c3f5e-1d4a-4f57-9a52-1f0b3c6b8a10"
    fleet.master.scenario([
        {"op": "create", "model": "tag", "id": tag, "fields": {"label": "not bound"}},
        {"op": "create", "id": 1, "fields": {"name": "bound"}},
    ])
    wait_until(lambda: replica_rows(fleet) == 1, 30, message="the product applied")
    assert replica_rows(fleet, "catalog_tagref") == 0
    assert message_count(fleet.queue) == 0
    assert message_count(dead) == 0
    assert terminate(supervisor) == 0


def _start_in(directory: Path, fleet: Fleet, *args: str) -> subprocess.Popen[bytes]:
    """``cqrs_consume`` with ``directory`` as its working directory (what ``--reload`` watches)."""
    log_path = directory / "consume.log"
    process = subprocess.Popen(
        [OUR_PYTHON, str(SERVICES / "replica" / "manage.py"), "cqrs_consume", *args],
        cwd=directory,
        env=fleet.replica.env,
        stdout=open(log_path, "wb"),  # noqa: SIM115 - closed with the process
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    process.log_path = log_path  # type: ignore[attr-defined]
    fleet.replica.processes.append(process)
    return process


def test_reload_and_sighup_restart_the_workers(fleet, tmp_path):
    watched = tmp_path / "project"
    (watched / "ignored").mkdir(parents=True)
    module = watched / "hook.py"
    module.write_text("VALUE = 1\n")
    supervisor = _start_in(watched, fleet, "-w", "2", "--reload", "--ignore-paths", "ignored")
    wait_consuming(fleet.queue, 2)
    first = workers(supervisor)
    assert len(first) == 2

    module.write_text("VALUE = 2\n")  # a code change: every worker is replaced
    second = wait_new_workers(supervisor, 2, first)
    wait_consuming(fleet.queue, 2)
    state = fleet.master.scenario(creates(range(1, 11)))
    wait_converged(fleet, state, 10)

    os.kill(supervisor.pid, signal.SIGHUP)  # SIGHUP: every worker is replaced too
    wait_new_workers(supervisor, 2, first | second)
    wait_consuming(fleet.queue, 2)
    state = fleet.master.scenario(creates(range(11, 21)))
    wait_converged(fleet, state, 20)

    log = log_text(supervisor)
    assert "Code changed: restarting CQRS workers" in log
    assert "received SIGHUP: restarting workers" in log
    assert terminate(supervisor) == 0, log_text(supervisor)[-3000:]
