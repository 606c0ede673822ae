"""A database that refuses connections for a while (``ALLOW_CONNECTIONS false`` and its sessions
terminated, as during a restart or a failover) is an outage, not a message failure: the replica
holds what it received and applies it once the database is back (nothing retried, nothing
dead-lettered), and the relay waits for the master database instead of failing."""

from __future__ import annotations

import threading
import time

import psycopg2

from integration_tests.failure_helpers import Rabbit
from integration_tests.harness import PG_HOST, PG_PORT, log_text, pg_query, stop_process, wait_until
from integration_tests.test_core_flows import _queue_exists, converged

OUTAGE_SECONDS = 60
CLOSED_PORT_URL = "amqp://guest:guest@127.0.0.1:1/%2F"


def _refuse_connections(dbname: str, refuse: bool) -> int:
    """Turn connections to ``dbname`` off (and end its sessions) or on again; return how many
    sessions were terminated."""
    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS {"false" if refuse else "true"}')
            if not refuse:
                return 0
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                [dbname],
            )
            return sum(1 for (ok,) in cur.fetchall() if ok)
    finally:
        conn.close()


def _accepting(dbname: str) -> bool:
    try:
        psycopg2.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname=dbname, connect_timeout=3).close()
    except psycopg2.OperationalError:
        return False
    return True


def test_replica_database_refusing_connections_for_a_minute_loses_nothing(fleet):
    replica_db = fleet.replica.env["IT_DB_NAME"]
    fleet.replica.env["IT_LOG_LEVEL"] = "INFO"  # the end of the outage is an INFO line
    consumer = fleet.replica.start("cqrs_consume", "-w", "2")
    wait_until(lambda: _queue_exists(fleet.queue), 30, message="replica consuming")
    outage_over = threading.Event()
    stream_done = threading.Event()
    errors: list[BaseException] = []
    rounds: list[int] = []

    def master_stream() -> None:
        """Creates, updates and deletes on the master, round after round, until two rounds after
        the outage."""
        try:
            index, after = 0, 0
            while after < 2:
                after += outage_over.is_set()
                base = index * 20
                steps = [{"op": "create", "id": base + i, "fields": {"name": f"p{base + i}", "price": f"{i}.25"}} for i in range(1, 21)]
                if index:
                    previous = base - 20
                    steps += [{"op": "update", "id": previous + i, "fields": {"name": f"updated {previous + i}"}} for i in range(1, 20, 2)]
                    steps += [{"op": "delete", "id": previous + 20}]
                fleet.master.scenario(steps)
                rounds.append(index)
                index += 1
                if index > 300:
                    raise AssertionError("the master stream never ended")
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            stream_done.set()

    thread = threading.Thread(target=master_stream, daemon=True)
    client = Rabbit()
    try:
        thread.start()
        wait_until(lambda: len(rounds) >= 3, 90, message="the stream started")
        wait_until(lambda: pg_query(replica_db, "SELECT count(*) FROM catalog_productref")[0][0] > 0, 60, message="replica applying")
        started = time.monotonic()
        _refuse_connections(replica_db, True)
        assert not _accepting(replica_db)
        published_before = len(rounds)
        time.sleep(OUTAGE_SECONDS)
        # The stream went on during the outage, the replica received it and held it.
        assert len(rounds) > published_before, "the master published nothing during the outage"
        assert consumer.poll() is None, log_text(consumer)[-3000:]
        _refuse_connections(replica_db, False)
        outage_over.set()
        print(f"replica database refused connections for {time.monotonic() - started:.0f}s")
        assert stream_done.wait(120), "the master stream did not end"
        assert not errors, errors
        wait_until(converged(fleet), 120, interval=1.0, message="replica equals master after the outage")
        assert client.count(f"dead_letter_{fleet.queue}") == 0
        assert client.count(fleet.queue) == 0
    finally:
        outage_over.set()
        _refuse_connections(replica_db, False)  # never leave the database closed (cleanup drops it)
        thread.join(120)
        client.close()
        code = stop_process(consumer)
    log = log_text(consumer)
    assert code == 0, log[-3000:]
    # No retry was counted and nothing was dead-lettered: the outage held the messages.
    assert "CQRS failed, retry in" not in log, log[-4000:]
    assert "CQRS dead-lettered" not in log, log[-4000:]
    assert "max_retries" not in log, log[-4000:]
    # One line when the outage started and one when it ended, per worker that held a batch.
    down = log.count("Replica database unavailable")
    back = log.count("Replica database available again")
    assert 1 <= down <= 2 and back == down, log[-4000:]
    assert "not currently accepting connections" in log or "terminating connection" in log, log[-4000:]
    assert "exited with code" not in log, log[-3000:]


def test_relay_once_waits_through_a_master_database_outage(fleet):
    master_db = fleet.master.env["IT_DB_NAME"]
    consumer = fleet.replica.start("cqrs_consume")
    wait_until(lambda: _queue_exists(fleet.queue), 30, message="replica consuming")
    fleet.master.env.update(IT_MASTER_CQRS_URL=CLOSED_PORT_URL, IT_PUBLISH_RETRIES="1")
    state = fleet.master.scenario([{"op": "create", "id": i, "fields": {"name": f"p{i}"}} for i in range(1, 51)])
    pending = "SELECT count(*) FROM dj_cqrs_outbox WHERE published_at IS NULL"
    assert pg_query(master_db, pending)[0][0] == 50
    del fleet.master.env["IT_MASTER_CQRS_URL"]
    fleet.master.env.update(IT_OUTBOX_GRACE="0", IT_LOG_LEVEL="INFO")
    relay = None
    try:
        _refuse_connections(master_db, True)
        relay = fleet.master.start("cqrs_relay", "--once")
        time.sleep(5)
        assert relay.poll() is None, log_text(relay)[-3000:]  # waiting, not crashed
        _refuse_connections(master_db, False)
        relay.wait(60)
    finally:
        _refuse_connections(master_db, False)
        if relay is not None and relay.poll() is None:
            stop_process(relay)
    log = log_text(relay)
    assert relay.returncode == 0, log[-3000:]
    assert "Published 50 event(s)." in log, log[-3000:]
    assert log.count("database 'default' unavailable (") == 1, log[-3000:]
    assert log.count("database 'default' available again") == 1, log[-3000:]
    assert pg_query(master_db, pending)[0][0] == 0
    wait_until(converged(fleet, state), 60, message="replica equals master after the relay")
    assert stop_process(consumer) == 0
