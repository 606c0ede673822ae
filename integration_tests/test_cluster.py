"""A real three-node RabbitMQ cluster (integration_tests/cluster.py) losing a node mid-stream.

Marked ``cluster``: they run in CI (where a cluster that cannot start fails the run) and can be
left out locally with ``-m "not cluster"``. Master, relay and consumers get the three nodes'
URLs (``CQRS['url']`` as a list); the services run on PostgreSQL as the other integration tests.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration_tests.cluster import RabbitCluster, running_cluster
from integration_tests.harness import (
    OUR_PYTHON,
    PG_HOST,
    PG_PORT,
    Service,
    log_text,
    pg_database,
    pg_query,
    require,
    stop_process,
    unique,
    wait_until,
)

pytestmark = pytest.mark.cluster


@pytest.fixture(autouse=True)
def _postgres() -> None:
    require(PG_HOST, PG_PORT, "PostgreSQL")


@pytest.fixture(scope="module")
def cluster() -> Iterator[RabbitCluster]:
    """One three-node cluster for this module's tests (about 15 s to start)."""
    yield from running_cluster()


class ClusterFleet:
    """A master and a replica service on the cluster, each with its own PostgreSQL database."""

    def __init__(
        self, cluster: RabbitCluster, master: Service, replica: Service, queue: str
    ) -> None:
        self.cluster = cluster
        self.master = master
        self.replica = replica
        self.queue = queue
        self.scenarios: list[subprocess.Popen[bytes]] = []

    def urls_from(self, first: int) -> str:
        """The cluster's URLs as JSON, starting with node index ``first`` (0-based)."""
        urls = self.cluster.urls
        return json.dumps(urls[first:] + urls[:first])

    def start_scenario(self, steps: list[dict[str, Any]]) -> subprocess.Popen[bytes]:
        """``it_scenario`` on the master in the background, the steps on its stdin."""
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as file:
            json.dump(steps, file)
        log_path = Path(tempfile.gettempdir()) / f"{unique('c16_scenario')}.log"
        with open(file.name) as stdin, open(log_path, "wb") as log:
            process = subprocess.Popen(
                [self.master.python, "manage.py", "it_scenario"],
                cwd=self.master.dir,
                env=self.master.env,
                stdin=stdin,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        process.log_path = log_path  # type: ignore[attr-defined]
        self.scenarios.append(process)
        return process

    def pending(self) -> int:
        return int(
            pg_query(
                self.master.env["IT_DB_NAME"],
                "SELECT count(*) FROM dj_cqrs_outbox WHERE published_at IS NULL",
            )[0][0]
        )

    def queue_depth(self, name: str) -> int:
        import pika

        nodes = [pika.URLParameters(url) for url in self.cluster.urls]
        for params in nodes:
            params.connection_attempts = 1
        connection = pika.BlockingConnection(nodes)
        try:
            return int(connection.channel().queue_declare(name, passive=True).method.message_count)
        finally:
            connection.close()

    def stop(self) -> None:
        for process in self.scenarios:
            stop_process(process)
        self.master.stop_all()
        self.replica.stop_all()


@contextlib.contextmanager
def cluster_fleet(cluster: RabbitCluster, **replica_env: str) -> Iterator[ClusterFleet]:
    run = unique("c16")
    base = {
        "IT_CQRS_EXCHANGE": f"cqrs_{run}",
        "IT_CQRS_QUEUE": f"replica_{run}",
        "IT_CQRS_URLS": json.dumps(cluster.urls),
    }
    with pg_database(f"{run}_master") as master_db, pg_database(f"{run}_replica") as replica_db:
        master = Service(
            "master",
            OUR_PYTHON,
            {**base, "IT_DB_NAME": master_db, "IT_OUTBOX_PUBLISH": "relay", "IT_OUTBOX_GRACE": "0"},
        )
        replica = Service("replica", OUR_PYTHON, {**base, "IT_DB_NAME": replica_db, **replica_env})
        master.migrate()
        replica.migrate()
        fleet = ClusterFleet(cluster, master, replica, f"replica_{run}")
        try:
            yield fleet
        finally:
            fleet.stop()


def applied_events(fleet: ClusterFleet) -> int:
    """Events the replica has applied: the sum of (revision + 1) over its products."""
    return int(
        pg_query(
            fleet.replica.env["IT_DB_NAME"],
            "SELECT coalesce(sum(cqrs_revision + 1), 0) FROM catalog_productref",
        )[0][0]
    )


def products(count: int, chunk: int) -> list[dict[str, Any]]:
    """``count`` creates in ``bulk_create`` steps of ``chunk`` rows (one transaction each)."""
    return [
        {
            "op": "bulk_create",
            "items": [
                {"id": i, "fields": {"name": f"p{i}"}}
                for i in range(start, min(start + chunk, count + 1))
            ],
        }
        for start in range(1, count + 1, chunk)
    ]


def updates(count: int, chunk: int, label: str) -> list[dict[str, Any]]:
    """One revision more for each of ``count`` products, in ``bulk_update`` steps of ``chunk``."""
    return [
        {
            "op": "bulk_update",
            "ids": list(range(start, min(start + chunk, count + 1))),
            "fields": {"name": f"{label}"},
        }
        for start in range(1, count + 1, chunk)
    ]


def test_quorum_queue_leader_killed_mid_stream_loses_nothing(cluster: RabbitCluster) -> None:
    """20,000 changes; two consumer processes on a quorum replica queue; the node leading the
    queue (with the relay and one consumer connected to it) is killed mid-stream and restarted
    later: every event is applied, the replica equals the master, nothing is dead-lettered."""
    count = 5000
    with cluster_fleet(cluster, IT_REPLICA_OPTIONS=json.dumps({"queue_type": "quorum"})) as fleet:
        # The first consumer declares the quorum queue, which gets its leader on that consumer's
        # node (RabbitMQ's client-local leader placement).
        first = fleet.replica.start("cqrs_consume", log_name=f"{unique('c16_consumer1')}.log")
        wait_until(
            lambda: any(q["name"] == fleet.queue for q in cluster.queues()),
            60,
            0.5,
            "the quorum queue declared",
        )
        leader = cluster.queue_leader(fleet.queue)
        assert [q["type"] for q in cluster.queues() if q["name"] == fleet.queue] == ["quorum"]
        # The relay and the first consumer are on the leader; the second consumer on another node.
        position = leader.index - 1
        fleet.master.env["IT_CQRS_URLS"] = fleet.urls_from(position)
        fleet.replica.env["IT_CQRS_URLS"] = fleet.urls_from(position + 1)
        second = fleet.replica.start("cqrs_consume", log_name=f"{unique('c16_consumer2')}.log")
        relay = fleet.master.start(
            "cqrs_relay", "--interval", "0.2", log_name=f"{unique('c16_relay')}.log"
        )

        started = time.monotonic()
        part1 = fleet.start_scenario(
            products(count, 1000) + updates(count, 1000, "r1")
        )  # 10,000 changes
        wait_until(
            lambda: applied_events(fleet) >= 4000, 120, 0.2, "4,000 events applied before the kill"
        )
        cluster.kill(leader)
        killed_at = time.monotonic()
        part2 = fleet.start_scenario(
            updates(count, 1000, "r2") + updates(count, 1000, "r3")
        )  # 10,000 more
        new_leader = wait_until(
            lambda: _leader_or_none(cluster, fleet.queue), 60, 0.5, "a new leader elected"
        )
        assert new_leader.name != leader.name
        # The node stays down while the master writes and the consumers apply; then it comes back.
        # (at least 5 s, and until 12,000 events are applied or 20 s have passed)
        wait_until(
            lambda: time.monotonic() - killed_at > 20
            or (time.monotonic() - killed_at > 5 and applied_events(fleet) >= 12000),
            120,
            0.2,
        )
        down_for = time.monotonic() - killed_at
        restart_seconds = cluster.restart(leader)

        for part in (part1, part2):
            assert part.wait(180) == 0, Path(part.log_path).read_text()[-3000:]  # type: ignore[attr-defined]
        wait_until(lambda: fleet.pending() == 0, 120, 0.5, "the outbox drained by the relay")
        wait_until(
            lambda: applied_events(fleet) == 4 * count, 180, 0.5, "all 20,000 events applied"
        )
        elapsed = time.monotonic() - started

        master, replica = fleet.master.state(), fleet.replica.state()
        assert len(master["it_product"]) == count
        assert {p["cqrs_revision"] for p in master["it_product"].values()} == {3}
        assert replica == master
        assert fleet.queue_depth(f"dead_letter_{fleet.queue}") == 0
        assert fleet.queue_depth(fleet.queue) == 0
        for process in (relay, first, second):
            assert process.poll() is None, log_text(process)[-3000:]
        # The relay and the first consumer were on the killed node: they failed over.
        lost = f"lost RabbitMQ node 127.0.0.1:{leader.port}"
        assert lost in log_text(relay), log_text(relay)[-3000:]
        if leader.index == 1:  # the first consumer connected to node 1, where it declared the queue
            assert lost in log_text(first), log_text(first)[-3000:]
        print(
            f"\n20,000 changes through the cluster in {elapsed:.1f} s; node {leader.name} (queue leader) down"
            f" {down_for:.1f} s, restarted in {restart_seconds:.1f} s; new leader {new_leader.name};"
            f" relay publish attempts nacked: {log_text(relay).count('NackError')}"
        )
        for process in (relay, first, second):
            assert stop_process(process) == 0, log_text(process)[-3000:]


def _leader_or_none(cluster: RabbitCluster, queue: str) -> Any:
    try:
        leader = cluster.queue_leader(queue)
    except Exception:  # noqa: BLE001 - no leader yet during the election
        return None
    return leader if leader.running() else None


def diagnosis(fleet: ClusterFleet, processes: list[Any]) -> str:
    """What a failed wait reports: revisions recorded, the cluster's queues, the logs' tails."""
    lines = [
        f"recorded: {recorded(fleet)}",
        *(str(q) for q in fleet.cluster.queues() if fleet.queue in q["name"]),
    ]
    for process in processes:
        lines.append(
            f"--- {process.args[-1] if process.args else process.pid} (exit {process.poll()}): {process.log_path}"
        )
        lines.append(log_text(process)[-1500:])
    return "\n".join(lines)


def recorded(fleet: ClusterFleet) -> int:
    return int(
        pg_query(fleet.replica.env["IT_DB_NAME"], "SELECT count(*) FROM it_order_orderapplied")[0][
            0
        ]
    )


def test_partitions_keep_per_key_order_while_consumers_die_and_come_back(
    cluster: RabbitCluster,
) -> None:
    """partitions = 8 (quorum queues) on the cluster, four consumer processes, two of them
    SIGKILLed mid-stream and started again: the recorder saw every product's revisions applied
    in increasing order with no gap, and ends equal to the master."""
    keys, rounds = 400, 24  # 400 creates + 24 x 400 updates = 10,000 changes
    options = {"partitions": 8, "queue_type": "quorum"}
    with cluster_fleet(
        cluster, IT_REPLICA_OPTIONS=json.dumps(options), IT_ORDER_RECORDER="1"
    ) as fleet:
        # Every revision published on its own, at its commit (the outbox relay publishes an
        # object's state as it is when it catches up: a lagging relay sends the latest revision).
        fleet.master.env["IT_MASTER_OPTIONS"] = json.dumps({"CQRS_OUTBOX": False})
        consumers = []
        for i in range(4):  # spread over the nodes: consumer i connects to node i % 3 first
            fleet.replica.env["IT_CQRS_URLS"] = fleet.urls_from(i % 3)
            consumers.append(
                fleet.replica.start("cqrs_consume", log_name=f"{unique(f'c16_part{i}')}.log")
            )
            if i == 0:
                wait_until(
                    lambda: sum(q["name"].startswith(f"{fleet.queue}.p") for q in cluster.queues())
                    >= 8,
                    60,
                    0.5,
                    "the 8 partition queues declared",
                )
        started = time.monotonic()
        steps = products(keys, keys) + [
            {"op": "bulk_update", "ids": list(range(1, keys + 1)), "fields": {"name": f"r{r}"}}
            for r in range(1, rounds + 1)
        ]
        scenario = fleet.start_scenario(steps)
        total = keys * (rounds + 1)
        wait_until(
            lambda: recorded(fleet) >= total * 0.25, 120, 0.2, "a quarter applied before the kills"
        )
        for process in consumers[:2]:
            stop_process(process, signal.SIGKILL)
        wait_until(lambda: recorded(fleet) >= total * 0.5, 120, 0.2, "half applied by the two left")
        for i in range(2):
            fleet.replica.env["IT_CQRS_URLS"] = fleet.urls_from(i % 3)
            consumers.append(
                fleet.replica.start("cqrs_consume", log_name=f"{unique(f'c16_again{i}')}.log")
            )

        assert scenario.wait(180) == 0, Path(scenario.log_path).read_text()[-3000:]  # type: ignore[attr-defined]
        try:
            wait_until(lambda: recorded(fleet) >= total, 120, 0.5, "every revision applied")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{diagnosis(fleet, consumers)}") from None
        elapsed = time.monotonic() - started
        time.sleep(1)  # anything applied twice or late would show now

        db = fleet.replica.env["IT_DB_NAME"]
        rows = pg_query(
            db, "SELECT key, revision, previous, pid FROM it_order_orderapplied ORDER BY id"
        )
        by_key: dict[int, list[tuple[int, int | None]]] = {}
        for key, revision, previous, _pid in rows:
            by_key.setdefault(key, []).append((revision, previous))
        assert len(rows) == total
        assert sorted(by_key) == list(range(1, keys + 1))
        for key, applied in by_key.items():
            # increasing, no gap
            assert [r for r, _p in applied] == list(range(rounds + 1)), (key, applied)
            assert [p for _r, p in applied] == [None, *range(rounds)], (key, applied)
        state = {
            k: (r, n)
            for k, r, n in pg_query(db, "SELECT key, revision, name FROM it_order_orderstate")
        }
        master = fleet.master.state()["it_product"]
        assert state == {int(pk): (p["cqrs_revision"], p["name"]) for pk, p in master.items()}
        # The first consumer (active on every partition until others share them) was killed:
        # other processes took its partitions over.
        assert len({pid for *_kr, pid in rows}) >= 2
        assert fleet.queue_depth(f"dead_letter_{fleet.queue}") == 0
        print(
            f"\n{total:,} changes over 8 partitions in {elapsed:.1f} s, 2 of 4 consumers killed and restarted"
        )
        for process in consumers[2:]:
            assert stop_process(process) == 0, log_text(process)[-3000:]
