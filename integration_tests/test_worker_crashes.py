"""Worker processes SIGKILLed while messages wait for their retry, and the replica PostgreSQL
connection killed mid-stream: nothing is lost, nothing is applied twice, retry counters hold."""

from __future__ import annotations

import itertools
import json
import os
import signal
import threading
import time

import pytest

from integration_tests.failure_helpers import (
    REDIS_URL,
    KombuClient,
    Rabbit,
    body,
    child_pids,
    fault_service,
    wait_for,
)
from integration_tests.harness import (
    REDIS_HOST,
    REDIS_PORT,
    log_text,
    require,
    stop_process,
    unique,
)


def _should_retry_calls(faults, pks):
    """``{pk: [current_retry, ...]}`` as the model's should_retry_cqrs hook saw them, in order."""
    calls = {pk: [] for pk in pks}
    for retries, note in faults.sql("SELECT retries, note FROM faults_journal WHERE kind = 'should_retry' ORDER BY id"):
        pk = int(note.rsplit("pk=", 1)[1])
        calls[pk].append(retries)
    return calls


def _wait_count(count, expected, faults, process, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = count()
        if value == expected:
            return
        time.sleep(0.1)
    import subprocess

    queues = subprocess.run(
        ["rabbitmqctl", "list_queues", "-q", "name", "messages_ready", "messages_unacknowledged", "consumers"],
        capture_output=True, text=True, timeout=30,
    ).stdout
    mine = "\n".join(line for line in queues.splitlines() if faults.queue in line)
    raise AssertionError(
        f"{value} messages kept by the broker, expected {expected}; applied={faults.applied()}\n{mine}\n"
        f"journal={faults.sql('SELECT kind, object_id, retries, note, pid FROM faults_journal WHERE kind <> %s ORDER BY id', ['delay'])}\n"
        f"log:\n{log_text(process)[-6000:]}"
    )


class Broker:
    """What the SIGKILL test needs to know about where messages wait, per transport."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.run = unique("kill")
        self.env = {"IT_CQRS_MAX_RETRIES": "5", "IT_CQRS_RETRY_DELAY": "3"}
        if kind == "kombu":
            # A unique key prefix keeps this test's unacknowledged messages (and the restore
            # sweeps a short visibility timeout triggers) away from every other test.
            self.options = {"visibility_timeout": 6, "global_keyprefix": f"{self.run}:", "unacked_restore_throttle": 1}
            self.env.update(
                IT_CQRS_TRANSPORT="dj_cqrs.transport.KombuTransport",
                IT_CQRS_URL=REDIS_URL,
                IT_TRANSPORT_OPTIONS=json.dumps(self.options),
            )

    def client(self):
        return Rabbit() if self.kind == "rabbitmq" else KombuClient(transport_options=self.options)

    def ready(self, client, faults):
        if self.kind == "rabbitmq":
            return client.consuming(faults.queue)
        return client.bound(faults.exchange, faults.queue)

    def at_rest(self, client, faults):
        """All 20 retries wait where this transport keeps them, none is on its way to a worker.

        kombu's Redis transport pops a message before it records it as unacknowledged, so a
        worker killed in between loses it (a documented limit of that transport); the test kills
        workers while retries wait, not in that instant."""
        if self.kind == "rabbitmq":
            return True  # the broker moves them itself; a SIGKILL can come at any moment
        redis = client.redis()
        return redis.hlen("unacked") == 20 and redis.llen(f"{faults.queue}.retry") == 0

    def waiting(self, client, faults):
        """Messages kept by the broker for this queue: ready in a queue, or delivered and not
        yet acknowledged (kombu/Redis keeps those in its ``unacked`` hash)."""
        if self.kind == "rabbitmq":
            return client.count(f"{faults.queue}.retry.3000") + client.count(faults.queue)
        redis = client.redis()
        return redis.hlen("unacked") + redis.llen(f"{faults.queue}.retry") + redis.llen(faults.queue)


@pytest.fixture(params=["rabbitmq", "kombu"])
def broker(request, rabbitmq, postgres):
    if request.param == "kombu":
        require(REDIS_HOST, REDIS_PORT, "Redis")
    return Broker(request.param)


def test_sigkill_while_messages_wait_for_their_retry(broker):
    failing = list(range(1, 21))
    healthy = list(range(101, 121))
    with fault_service(run=broker.run, **broker.env) as faults:
        process = faults.start()
        client = broker.client()
        try:
            wait_for(lambda: broker.ready(client, faults), 30, message="topology declared")
            # "broken" fails until the test flips the "repaired" switch: no race with the clock.
            for pk in failing:
                client.publish(faults.exchange, "it_fault", body("it_fault", pk, data={"name": f"f{pk}", "mode": "broken"}))
            for pk in healthy:
                client.publish(faults.exchange, "it_fault", body("it_fault", pk, data={"name": f"h{pk}", "mode": "ok"}))

            def failed_at_least(times):
                calls = _should_retry_calls(faults, failing)
                return all(len(set(seen)) >= times for seen in calls.values())

            # Every failing message has failed once and waits for its retry; the others are applied.
            wait_for(lambda: failed_at_least(1), 30, message="first failures")
            wait_for(lambda: set(faults.applied()) >= set(healthy), 30, message="healthy ones applied")
            wait_for(lambda: broker.at_rest(client, faults), 30, message="retries waiting")
            workers = child_pids(process.pid)
            assert len(workers) == 1, workers
            os.kill(workers[0], signal.SIGKILL)  # the worker only: the supervisor starts a new one

            # Later failures happen in the new worker; then kill everything while they wait.
            wait_for(lambda: failed_at_least(2), 60, message="second failures")
            wait_for(lambda: broker.at_rest(client, faults), 30, message="retries waiting")
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
            # Nothing is lost: all 20 are still kept by the broker (a message a worker was applying
            # at that moment is redelivered: allow the broker a moment to notice).
            _wait_count(lambda: broker.waiting(client, faults), 20, faults, process)
            assert not set(failing) & set(faults.applied())

            faults.sql("INSERT INTO faults_switch (name, \"on\") VALUES ('repaired', true)")
            process = faults.start()
            wait_for(lambda: set(faults.applied()) >= set(failing + healthy), 60, message="all applied")
            time.sleep(1)  # a duplicate would show up now
            applied = faults.applied()
            assert {pk: applied[pk] for pk in failing + healthy} == {pk: 1 for pk in failing + healthy}
            assert faults.rows() == set(failing + healthy)
            # The retry counter went on across both crashes (0, 1, 2 ...), never back to 0. A value
            # seen twice is an attempt a SIGKILL interrupted (rolled back, redelivered): at most one
            # per kill.
            calls = _should_retry_calls(faults, failing)
            repeats = 0
            for pk, seen in calls.items():
                assert seen[0] == 0 and max(seen) >= 1, (pk, seen)
                steps = [b - a for a, b in itertools.pairwise(seen)]
                assert set(steps) <= {0, 1}, (pk, seen)
                repeats += steps.count(0)
            assert repeats <= 2, calls
            assert client.count(faults.dlq) == 0
            assert broker.waiting(client, faults) == 0
        finally:
            client.close()
            stop_process(process)


def test_replica_database_connection_killed_mid_stream(rabbitmq, postgres):
    total = 300
    with fault_service(IT_CQRS_MAX_RETRIES="3", IT_CQRS_RETRY_DELAY="0", IT_BATCH_SIZE="20") as faults:
        process = faults.start("-w", "2")
        client = Rabbit()
        kills: list[int] = []
        try:
            wait_for(lambda: client.consuming(faults.queue), 30, message="consumer attached")

            def killer() -> None:
                # Terminate the workers' backends three times while the stream is being applied.
                for threshold in (50, 120, 190):
                    deadline = time.monotonic() + 30
                    while time.monotonic() < deadline:
                        done = faults.sql("SELECT COUNT(*) FROM faults_applied")[0][0]
                        if done >= threshold:
                            break
                        time.sleep(0.02)
                    killed = faults.sql(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = %s AND pid <> pg_backend_pid()",
                        [faults.db],
                    )
                    kills.append(len(killed))

            thread = threading.Thread(target=killer, daemon=True)
            thread.start()
            for pk in range(1, total + 1):
                client.publish(faults.exchange, "it_fault", body("it_fault", pk, data={"name": f"n{pk}", "mode": "ok"}))
                if pk % 50 == 0:
                    time.sleep(0.1)
            thread.join(60)
            wait_for(lambda: len(faults.applied()) == total, 90, message="all applied")
            time.sleep(1)
            applied = faults.applied()
            assert applied == {pk: 1 for pk in range(1, total + 1)}
            assert faults.rows() == set(range(1, total + 1))
            assert len(kills) == 3 and sum(kills) >= 3, kills
            assert client.count(faults.dlq) == 0
            assert client.count(faults.queue) == 0
        finally:
            client.close()
            stop_process(process)
        log = log_text(process)
        # The workers noticed, kept the message, reconnected by themselves, and never died.
        assert "Replica database unavailable" in log, log[-3000:]
        assert "exited with code" not in log, log[-3000:]
