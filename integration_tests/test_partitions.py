"""Partitioned replica queues (``CQRS['replica']['partitions']``) and quorum queues
(``CQRS['replica']['queue_type']``) on the machine's RabbitMQ (docs/scaling.md).

The replica is the ``faults`` service; its ``it_seq`` recorder (a ``RawReplicaMixin`` handler,
integration_tests/services/faults/faults/models.py) writes every revision it applies with the
revision it followed, so a revision applied out of order, twice or never shows.
"""

from __future__ import annotations

import base64
import contextlib
import json
import signal
import threading
import time
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest

from integration_tests.failure_helpers import Rabbit, body, child_pids, fault_service, wait_for
from integration_tests.harness import (
    OUR_PYTHON,
    RABBIT_HOST,
    RABBIT_MGMT_PORT,
    RABBIT_PORT,
    Service,
    log_text,
    pg_database,
    pg_query,
    rabbit_cleanup,
    require,
    stop_process,
    unique,
)

HEADER = "x-cqrs-partition-key"


@pytest.fixture(autouse=True)
def _services() -> None:
    require(RABBIT_HOST, RABBIT_PORT, "RabbitMQ")
    require(RABBIT_HOST, 5432, "PostgreSQL")


def _management(path: str) -> Any:
    request = urllib.request.Request(
        f"http://{RABBIT_HOST}:{RABBIT_MGMT_PORT}/api/{path}",
        headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _queue_info(name: str) -> dict[str, Any]:
    return _management(f"queues/%2F/{urllib.parse.quote(name, safe='')}")  # type: ignore[no-any-return]


def _delete_exchanges(*names: str) -> None:
    with contextlib.suppress(Exception):
        rabbit = Rabbit()
        try:
            for name in names:
                channel = rabbit.connection.channel()
                with contextlib.suppress(Exception):
                    channel.exchange_delete(name)
        finally:
            rabbit.close()


@contextlib.contextmanager
def partitioned_replica(options: dict[str, Any], **env: str) -> Iterator[Any]:
    """The faults replica with ``CQRS['replica']`` extended by ``options``; its partition
    exchanges are deleted afterwards (the queues go with the test's prefix)."""
    run = unique("p16")
    try:
        with fault_service(run, IT_REPLICA_OPTIONS=json.dumps(options), **env) as faults:
            yield faults
    finally:
        queue = f"replica_{run}"
        _delete_exchanges(f"{queue}.partitions", f"{queue}.partitions.unkeyed")


def _partition_queues(faults: Any, count: int) -> list[str]:
    return [f"{faults.queue}.p{i}" for i in range(count)]


def _consumers(rabbit: Rabbit, queue: str) -> int:
    channel = rabbit.connection.channel()
    try:
        return int(channel.queue_declare(queue, passive=True).method.consumer_count)
    except Exception:  # noqa: BLE001 - not declared yet
        return 0
    finally:
        if channel.is_open:
            channel.close()


def _seq_message(key: int, revision: int, **data: Any) -> bytes:
    return json.dumps(
        body("it_seq", key, revision, data={"value": f"{key}-{revision}", **data})
    ).encode()


def _publish_all(
    rabbit: Rabbit,
    exchange: str,
    messages: list[tuple[int, int, dict[str, Any]]],
    pause_every: int = 0,
    pause: float = 0.0,
) -> None:
    """Publish ``(key, revision, data)`` as a dj_cqrs master does (routing key ``it_seq``, the
    partition header), confirmed."""
    import pika

    for index, (key, revision, data) in enumerate(messages):
        rabbit.channel.basic_publish(
            exchange,
            "it_seq",
            _seq_message(key, revision, **data),
            pika.BasicProperties(
                content_type="text/plain", delivery_mode=2, headers={HEADER: f"it_seq:{key}"}
            ),
            mandatory=True,
        )
        if pause_every and index % pause_every == pause_every - 1:
            time.sleep(pause)


def _applied(faults: Any) -> dict[int, list[tuple[int, int | None, int]]]:
    """``{key: [(revision, previous, pid), ...]}`` in the order they were applied."""
    rows = faults.sql("SELECT key, revision, previous, pid FROM faults_seqapplied ORDER BY id")
    applied: dict[int, list[tuple[int, int | None, int]]] = defaultdict(list)
    for key, revision, previous, pid in rows:
        applied[key].append((revision, previous, pid))
    return applied


def _applied_count(faults: Any) -> int:
    return int(faults.sql("SELECT count(*) FROM faults_seqapplied")[0][0])


def _recent_pids(faults: Any, rows: int = 200) -> set[int]:
    """The worker processes that applied the last ``rows`` revisions."""
    return {
        pid
        for (pid,) in faults.sql(
            "SELECT pid FROM (SELECT pid FROM faults_seqapplied ORDER BY id DESC LIMIT %s) r",
            [rows],
        )
    }


def _state(faults: Any) -> dict[int, tuple[int, str]]:
    return {
        key: (revision, value)
        for key, revision, value in faults.sql("SELECT key, revision, value FROM faults_seqstate")
    }


def _diagnosis(faults: Any, processes: list[Any]) -> str:
    """Revisions missing, where the messages are (partition, retry and dead-letter queues: ready,
    unacknowledged, consumers) and the end of the consumers' logs."""
    applied = _applied(faults)
    missing = [
        (key, revision)
        for key, rows in applied.items()
        for revision in range(max(r for r, _p, _pid in rows) + 1)
        if revision not in {r for r, _p, _pid in rows}
    ]
    lines = [f"applied: {_applied_count(faults)}; missing (key, revision): {missing[:20]}"]
    with contextlib.suppress(Exception):
        lines += [
            f"{q['name']}: ready={q.get('messages_ready')} unacked={q.get('messages_unacknowledged')}"
            f" consumers={q.get('consumers')}"
            for q in _management("queues/%2F")
            if q["name"].startswith(faults.queue + ".") or q["name"] == faults.dlq
        ]
    lines += [f"--- {process.pid}:\n{log_text(process)[-1500:]}" for process in processes]
    return "\n".join(lines)


def _wait_subscribed(
    rabbit: Rabbit, queues: list[str], consumers: int, processes: list[Any], timeout: float = 30
) -> None:
    def ready() -> bool:
        return all(_consumers(rabbit, q) >= consumers for q in queues)

    try:
        wait_for(ready, timeout=timeout, message=f"{consumers} consumers on every partition")
    except AssertionError:
        raise AssertionError("\n".join(log_text(p)[-3000:] for p in processes)) from None


def test_eight_partitions_four_processes_two_killed_keep_every_key_in_order() -> None:
    """Four ``cqrs_consume`` processes (6 workers), two of the busiest SIGKILLed mid-run and
    started again: every key's revisions applied once each, in order, no gap."""
    keys, revisions = 120, 25
    with (
        partitioned_replica({"partitions": 8, "CQRS_BATCH_SIZE": 50}) as faults,
        contextlib.closing(Rabbit()) as rabbit,
    ):
        queues = _partition_queues(faults, 8)
        # Two processes with two workers each (the supervisor's -w), two with one: 6 workers.
        arguments = [("-w", "2"), (), ("-w", "2"), ()]
        processes = [faults.start(*args) for args in arguments]
        _wait_subscribed(rabbit, queues, 6, processes)
        # Interleaved: revision r of every key before revision r + 1 of any.
        messages = [
            (key, revision, {}) for revision in range(revisions) for key in range(1, keys + 1)
        ]
        published: list[BaseException] = []

        def publish() -> None:
            try:
                _publish_all(Rabbit(), faults.exchange, messages, 150, 0.3)
            except BaseException as exc:  # reported by the diagnosis
                published.append(exc)
                raise

        publisher = threading.Thread(target=publish)
        publisher.start()
        try:
            # The partitions spread over the processes (balancing), then the two busiest are killed.
            wait_for(
                lambda: len(_recent_pids(faults)) >= 2, timeout=40, message="two processes applying"
            )
            recent = _recent_pids(faults)
            workers = {process: set(child_pids(process.pid)) for process in processes}
            victims = sorted(processes, key=lambda p: -len(workers[p] & recent))[:2]
            killed = set().union(*(workers[p] for p in victims))
            before_kill = _applied_count(faults)
            for process in victims:
                stop_process(process, signal.SIGKILL)
            wait_for(
                lambda: _applied_count(faults) >= before_kill + 300,
                timeout=40,
                message="progress after the kill",
            )
            for process in victims:
                index = processes.index(process)
                processes[index] = faults.start(*arguments[index])
            _wait_subscribed(rabbit, queues, 6, processes)
            publisher.join(60)
            try:
                wait_for(
                    lambda: _applied_count(faults) >= len(messages),
                    timeout=40,
                    message="every revision applied",
                )
            except AssertionError as exc:
                raise AssertionError(
                    f"{exc}\npublisher: alive={publisher.is_alive()} errors={published}\n"
                    f"{_diagnosis(faults, processes)}"
                ) from None
            time.sleep(0.5)  # nothing more may come
        finally:
            publisher.join(60)
            logs = "\n".join(log_text(p)[-2000:] for p in processes)
        applied = _applied(faults)
        assert sorted(applied) == list(range(1, keys + 1)), logs
        for key, rows in applied.items():
            assert [r for r, _p, _pid in rows] == list(range(revisions)), f"key {key}: {rows}"
            assert [p for _r, p, _pid in rows] == [None, *range(revisions - 1)], (
                f"key {key}: {rows}"
            )
        # The final state is the master's: the last revision and value of every key.
        assert _state(faults) == {
            key: (revisions - 1, f"{key}-{revisions - 1}") for key in range(1, keys + 1)
        }
        pids = {pid for rows in applied.values() for _r, _p, pid in rows}
        assert len(pids) >= 2, f"one process applied everything: {pids}"
        # The workers killed were serving partitions, and the run went on after the kill.
        assert killed & pids, (killed, pids)
        assert before_kill < len(messages) - 300, before_kill
        assert sum(rabbit.count(q) for q in queues) == 0
        assert rabbit.count(faults.dlq) == 0
        assert "Traceback" not in logs, logs


def test_a_poison_key_is_retried_in_its_partition_and_dead_lettered_without_holding_up_the_others() -> (
    None
):
    env = {"IT_CQRS_MAX_RETRIES": "2", "IT_CQRS_RETRY_DELAY": "0.5"}
    with (
        partitioned_replica({"partitions": 2}, **env) as faults,
        contextlib.closing(Rabbit()) as rabbit,
    ):
        queues = _partition_queues(faults, 2)
        process = faults.start()
        _wait_subscribed(rabbit, queues, 1, [process])
        poison = 7
        messages = [(poison, 0, {"fail": 1000})] + [
            (key, rev, {}) for rev in range(3) for key in range(100, 140)
        ]
        _publish_all(rabbit, faults.exchange, messages)
        wait_for(
            lambda: _applied_count(faults) >= 120, timeout=30, message="the other keys applied"
        )
        letters = wait_for(
            lambda: rabbit.drain(faults.dlq), timeout=30, message="the poison dead-lettered"
        )
        assert len(letters) == 1
        _method, properties, raw = letters[0]
        assert json.loads(raw)["instance_pk"] == poison
        assert properties.headers["x-cqrs-reason"] == "max_retries"
        assert properties.headers[HEADER] == f"it_seq:{poison}"
        # Three attempts (CQRS_MAX_RETRIES = 2), each from a retry queue of its own partition.
        attempts = faults.sql(
            "SELECT count(*) FROM faults_journal WHERE kind = 'seq_attempt' AND object_id = %s",
            [poison],
        )
        assert attempts[0][0] == 3
        retry_queues = [q for q in (f"{p}.retry.500" for p in queues) if rabbit.exists(q)]
        assert len(retry_queues) == 1, retry_queues
        info = _queue_info(retry_queues[0])
        assert (
            info["arguments"]["x-dead-letter-routing-key"]
            == retry_queues[0].rsplit(".retry.", 1)[0]
        )
        applied = _applied(faults)
        assert poison not in applied
        assert all([r for r, _p, _pid in applied[key]] == [0, 1, 2] for key in range(100, 140))
        stop_process(process)


def test_quorum_queues_on_one_node_declare_apply_retry_and_dead_letter() -> None:
    env = {"IT_CQRS_MAX_RETRIES": "1", "IT_CQRS_RETRY_DELAY": "0.5"}
    with (
        partitioned_replica({"queue_type": "quorum"}, **env) as faults,
        contextlib.closing(Rabbit()) as rabbit,
    ):
        process = faults.start()
        wait_for(
            lambda: _consumers(rabbit, faults.queue) == 1,
            timeout=30,
            message="the consumer subscribed",
        )
        _publish_all(
            rabbit,
            faults.exchange,
            [(1, 0, {}), (2, 0, {"fail": 1}), (3, 0, {"fail": 1000}), (1, 1, {})],
        )
        wait_for(
            lambda: _state(faults).get(2) == (0, "2-0") and _state(faults).get(1) == (1, "1-1"),
            timeout=30,
        )
        letters = wait_for(
            lambda: rabbit.drain(faults.dlq), timeout=30, message="key 3 dead-lettered"
        )
        assert [json.loads(raw)["instance_pk"] for _m, _p, raw in letters] == [3]
        stop_process(process)
        for name in (faults.queue, f"{faults.queue}.retry.500", faults.dlq):
            info = _queue_info(name)
            assert info["type"] == "quorum", (name, info["type"])
        assert _queue_info(faults.queue)["arguments"]["x-delivery-limit"] == 50


def test_a_queue_of_another_type_is_refused_with_the_migration_hint() -> None:
    with (
        partitioned_replica({"partitions": 2, "queue_type": "quorum"}) as faults,
        contextlib.closing(Rabbit()) as rabbit,
    ):
        rabbit.channel.queue_declare(
            f"{faults.queue}.p0", durable=True
        )  # an existing classic queue
        process = faults.start()
        try:
            wait_for(
                lambda: "dj_cqrs.E101" in log_text(process), timeout=30, message="E101 in the log"
            )
            # Reconnecting cannot help: the worker exits on the configuration error and
            # cqrs_consume stops instead of restarting it.
            wait_for(lambda: process.poll() is not None, timeout=30, message="cqrs_consume to stop")
            assert process.returncode == 1, log_text(process)
            assert "stopping the consumer instead of restarting it" in log_text(process)
        finally:
            stop_process(process)
        text = log_text(process)
        assert (
            "inequivalent arg" in text
            and "Migrating an existing queue" in text
            and "docs/scaling.md" in text
        )


def test_a_direct_sync_reaches_the_partitions_from_a_real_master() -> None:
    run = unique("p16sync")
    exchange, queue = f"cqrs_{run}", f"replica_{run}"
    env = {
        "IT_CQRS_EXCHANGE": exchange,
        "IT_CQRS_QUEUE": queue,
        "IT_REPLICA_OPTIONS": json.dumps({"partitions": 4}),
    }
    try:
        with pg_database(f"{run}_master") as master_db, pg_database(f"{run}_replica") as replica_db:
            master = Service("master", OUR_PYTHON, {**env, "IT_DB_NAME": master_db})
            replica = Service("replica", OUR_PYTHON, {**env, "IT_DB_NAME": replica_db})
            master.migrate()
            replica.migrate()
            with contextlib.closing(Rabbit()) as rabbit:
                process = replica.start("cqrs_consume")
                try:
                    _wait_subscribed(rabbit, [f"{queue}.p{i}" for i in range(4)], 1, [process])
                    master.scenario(
                        [
                            {
                                "op": "create",
                                "model": "product",
                                "id": i,
                                "fields": {"name": f"p{i}"},
                            }
                            for i in range(1, 41)
                        ]
                    )
                    wait_for(
                        lambda: len(replica.state().get("it_product", {})) == 40,
                        timeout=30,
                        message="40 products",
                    )
                    stop_process(process)
                    pg_query(replica_db, "DELETE FROM catalog_productref")
                    master.manage(
                        "cqrs_sync", "--cqrs-id", "it_product", "--filter", "{}", "--queue", queue
                    )
                    # The master's partition header spread the direct syncs over the partitions.
                    waiting = [rabbit.count(f"{queue}.p{i}") for i in range(4)]
                    assert sum(waiting) == 40 and sum(1 for n in waiting if n) >= 2, waiting
                    # cqrs_status adds the partitions up.
                    report = replica.manage("cqrs_status", "--json", "--replica-only", check=False)
                    assert '"ready": 40' in report.stdout, report.stdout + report.stderr
                    process = replica.start("cqrs_consume")
                    wait_for(
                        lambda: len(replica.state().get("it_product", {})) == 40,
                        timeout=30,
                        message="40 synced back",
                    )
                    assert (
                        replica.state()["it_product"]
                        == json.loads(master.manage("it_state").stdout)["it_product"]
                    )
                finally:
                    master.stop_all()
                    replica.stop_all()
    finally:
        rabbit_cleanup(exchange, [queue, f"dead_letter_{queue}"])
        _delete_exchanges(f"{queue}.partitions", f"{queue}.partitions.unkeyed")


def test_messages_without_the_header_all_go_to_one_partition_in_order() -> None:
    """A django-cqrs master sends no headers: its messages share one partition and are applied in
    order (docs/scaling.md, mixed fleets)."""
    import pika

    with partitioned_replica({"partitions": 4}) as faults, contextlib.closing(Rabbit()) as rabbit:
        queues = _partition_queues(faults, 4)
        process = faults.start()
        _wait_subscribed(rabbit, queues, 1, [process])
        stop_process(process)
        wait_for(lambda: all(_consumers(rabbit, q) == 0 for q in queues), timeout=20)
        plain = pika.BasicProperties(content_type="text/plain", delivery_mode=2)
        for revision in range(5):
            for key in range(1, 11):
                rabbit.channel.basic_publish(
                    faults.exchange, "it_seq", _seq_message(key, revision), plain, mandatory=True
                )
        waiting = [rabbit.count(q) for q in queues]
        assert sorted(waiting) == [0, 0, 0, 50], waiting
        process = faults.start()
        wait_for(lambda: _applied_count(faults) == 50, timeout=30, message="50 applied")
        stop_process(process)
        applied = _applied(faults)
        assert all([r for r, _p, _pid in applied[key]] == list(range(5)) for key in range(1, 11)), (
            applied
        )


def test_turning_partitions_on_drains_the_old_queue_and_unbinds_it() -> None:
    with partitioned_replica({"partitions": 2}) as faults, contextlib.closing(Rabbit()) as rabbit:
        # The queue of the unpartitioned topology, with a backlog.
        rabbit.channel.exchange_declare(faults.exchange, exchange_type="topic", durable=True)
        rabbit.channel.queue_declare(faults.queue, durable=True)
        for key in ("it_seq", f"cqrs.{faults.queue}.it_seq"):
            rabbit.channel.queue_bind(faults.queue, faults.exchange, routing_key=key)
        _publish_all(rabbit, faults.exchange, [(key, 0, {}) for key in range(1, 21)])
        assert rabbit.count(faults.queue) == 20
        process = faults.start()
        wait_for(lambda: _applied_count(faults) == 20, timeout=30, message="the backlog applied")
        _publish_all(rabbit, faults.exchange, [(key, 1, {}) for key in range(1, 21)])
        wait_for(lambda: _applied_count(faults) == 40, timeout=30, message="new messages applied")
        stop_process(process)
        assert rabbit.count(faults.queue) == 0
        bindings = _management(f"queues/%2F/{faults.queue}/bindings")
        assert [b["routing_key"] for b in bindings if b["source"] == faults.exchange] == []
        assert "still exists" in log_text(process)
