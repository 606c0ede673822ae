"""Worker processes SIGKILLed while messages wait for their retry, and the replica PostgreSQL
connection killed mid-stream: nothing is lost, nothing is applied twice, retry counters hold."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from integration_tests.failure_helpers import Rabbit, body, child_pids, fault_service, wait_for
from integration_tests.harness import log_text, stop_process


@pytest.fixture
def services(rabbitmq, postgres):
    return fault_service


def _should_retry_calls(faults, pks):
    """``{pk: [current_retry, ...]}`` as the model's should_retry_cqrs hook saw them, in order."""
    calls = {pk: [] for pk in pks}
    for retries, note in faults.sql("SELECT retries, note FROM faults_journal WHERE kind = 'should_retry' ORDER BY id"):
        pk = int(note.rsplit("pk=", 1)[1])
        calls[pk].append(retries)
    return calls


def test_sigkill_while_messages_wait_for_their_retry(services):
    failing = list(range(1, 21))
    healthy = list(range(101, 121))
    with services(IT_CQRS_MAX_RETRIES="5", IT_CQRS_RETRY_DELAY="2") as faults:
        process = faults.start()
        client = Rabbit()
        try:
            wait_for(lambda: client.exists(faults.queue), 30, message="queue declared")
            for pk in failing:
                client.publish(faults.exchange, "it_fault", body("it_fault", pk, data={"name": f"f{pk}", "mode": "fail:2"}))
            for pk in healthy:
                client.publish(faults.exchange, "it_fault", body("it_fault", pk, data={"name": f"h{pk}", "mode": "ok"}))
            retry_queue = f"{faults.queue}.retry.2000"

            # Every failing message has failed once and waits in the broker's retry queue.
            wait_for(lambda: sum(map(len, _should_retry_calls(faults, failing).values())) == 20, 30, message="first failures")
            workers = child_pids(process.pid)
            assert len(workers) == 1, workers
            os.kill(workers[0], signal.SIGKILL)  # the worker only: the supervisor starts a new one
            assert client.count(retry_queue) + client.count(faults.queue) == 20

            # Second failures (retries=1) happen in the new worker; then kill everything.
            wait_for(lambda: all(c == [0, 1] for c in _should_retry_calls(faults, failing).values()), 30, message="second failures")
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
            assert client.count(retry_queue) + client.count(faults.queue) == 20

            process = faults.start()
            wait_for(lambda: set(faults.applied()) >= set(failing + healthy), 60, message="all applied")
            time.sleep(1)  # a duplicate would show up now
            applied = faults.applied()
            assert {pk: applied[pk] for pk in failing + healthy} == {pk: 1 for pk in failing + healthy}
            assert faults.rows() == set(failing + healthy)
            # The retry counter went on across both crashes: 0, 1, then the third attempt applied.
            assert _should_retry_calls(faults, failing) == {pk: [0, 1] for pk in failing}
            attempts = dict(faults.sql("SELECT object_id, COUNT(*) FROM faults_journal WHERE kind='attempt' GROUP BY object_id"))
            assert {pk: attempts[pk] for pk in failing} == {pk: 3 for pk in failing}
            assert client.count(faults.dlq) == 0
            assert client.count(retry_queue) == 0
            assert client.count(faults.queue) == 0
        finally:
            client.close()
            stop_process(process)


def test_replica_database_connection_killed_mid_stream(services):
    total = 400
    with services(IT_CQRS_MAX_RETRIES="3", IT_CQRS_RETRY_DELAY="0", IT_BATCH_SIZE="20") as faults:
        process = faults.start("-w", "2")
        client = Rabbit()
        kills: list[int] = []
        try:
            wait_for(lambda: client.exists(faults.queue), 30, message="queue declared")

            def killer() -> None:
                # Terminate the workers' backends three times while the stream is being applied.
                for threshold in (60, 160, 260):
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
        assert "database_unavailable" in log, log[-3000:]
        assert "exited with code" not in log, log[-3000:]
