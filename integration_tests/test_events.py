"""Domain events between two real services (issue 13), over PostgreSQL and RabbitMQ or kombu (Redis).

Service A (``services/events_emitter``) emits events in transactions that also write rows, some
rolled back, and records which events committed (``shop_emitted``, in the same transaction) and
which were rolled back (``shop_rolledback``, through a second connection). Service B
(``services/events_handler``) has handlers on overlapping patterns (``order.*``, ``#.paid``, an
``ordered=True`` one over both names' families) that each write one ``sink_handled`` row per run,
without a unique constraint, so a duplicate shows up as a second row. The tests compare B's rows
with A's: exactly once per (handler, event), nothing from a rolled-back transaction, nothing
missing, per-key order. Every wait is bounded.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from integration_tests.failure_helpers import (
    REDIS_URL,
    KombuClient,
    Rabbit,
    body,
    child_pids,
    redis_cleanup,
)
from integration_tests.harness import (
    OUR_PYTHON,
    PG_HOST,
    PG_PORT,
    REDIS_HOST,
    REDIS_PORT,
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

#: The handlers of service B over A's stream, and the event names each one matches.
STREAM_NAMES = ("order.created", "order.paid", "invoice.paid")
STREAM_HANDLERS = {
    "orders": {"order.created", "order.paid"},  # "order.*"
    "paid": {"order.paid", "invoice.paid"},  # "#.paid"
    "latest": set(STREAM_NAMES),  # "order.*", "invoice.*", ordered=True
}


class EventFleet:
    """Service A (emitter) and service B (handlers) on their own databases, exchange and queue,
    on RabbitMQ (``kind="rabbitmq"``) or on kombu with Redis (``kind="kombu"``)."""

    def __init__(
        self, kind: str, run: str, emitter_db: str, handler_db: str, env: dict[str, str]
    ) -> None:
        self.kind = kind
        self.run = run
        self.exchange = f"cqrs_{run}"
        self.queue = f"events_{run}"
        self.dlq = f"dead_letter_{self.queue}"
        base = {"IT_CQRS_EXCHANGE": self.exchange, **env}
        self.options: dict[str, Any] = {}
        if kind == "kombu":
            # A unique key prefix keeps this test's keys (and kombu's unacked hash) to itself.
            self.options = {"global_keyprefix": f"{run}:"}
            base.update(
                IT_CQRS_TRANSPORT="dj_cqrs.transport.KombuTransport",
                IT_CQRS_URL=REDIS_URL,
                IT_TRANSPORT_OPTIONS=json.dumps(self.options),
            )
        self.emitter_db = emitter_db
        self.handler_db = handler_db
        self.emitter = Service("events_emitter", OUR_PYTHON, {**base, "IT_DB_NAME": emitter_db})
        self.handler = Service(
            "events_handler",
            OUR_PYTHON,
            {**base, "IT_DB_NAME": handler_db, "IT_CQRS_QUEUE": self.queue},
        )
        self.client: Any = (
            Rabbit() if kind == "rabbitmq" else KombuClient(transport_options=self.options)
        )

    # -- the two databases -------------------------------------------------------------------
    def a(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        return pg_query(self.emitter_db, sql, params)

    def b(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        return pg_query(self.handler_db, sql, params)

    def b_execute(self, sql: str) -> None:
        """Run a statement on B's database and commit it."""
        import psycopg2

        conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname=self.handler_db)
        try:
            with conn, conn.cursor() as cursor:
                cursor.execute(sql)
        finally:
            conn.close()

    def committed(self) -> dict[str, tuple[str, str]]:
        """``{event_id: (name, key)}`` of every event A committed."""
        return {
            row[0]: (row[1], row[2])
            for row in self.a("SELECT event_id, name, key FROM shop_emitted")
        }

    def rolled_back(self) -> set[str]:
        return {row[0] for row in self.a("SELECT event_id FROM shop_rolledback")}

    def outbox_seqs(self) -> dict[str, tuple[str, int]]:
        """``{event_id: (key, seq)}`` as A's outbox holds them."""
        rows = self.a(
            "SELECT object_pk, revision, data FROM dj_cqrs_outbox WHERE signal_type = 'EVENT'"
        )
        return {json.loads(data)["id"]: (key, seq) for key, seq, data in rows}

    def pending(self) -> int:
        return int(self.a("SELECT count(*) FROM dj_cqrs_outbox WHERE published_at IS NULL")[0][0])

    def handled(self, handler: str) -> list[tuple[str, str, str, int]]:
        """``(event_id, name, key, seq)`` of ``handler``'s runs, in the order they were written."""
        return [
            tuple(row)
            for row in self.b(
                "SELECT event_id, name, key, seq FROM sink_handled WHERE handler = %s ORDER BY id",
                [handler],
            )
        ]  # type: ignore[misc]

    def handled_count(self, handler: str) -> int:
        return int(self.b("SELECT count(*) FROM sink_handled WHERE handler = %s", [handler])[0][0])

    def inbox(self, handler: str) -> dict[str, str]:
        """``{event_id: status}`` of ``handler``'s rows in B's inbox (``dj_cqrs_inbox``)."""
        rows = self.b(
            "SELECT event_id, status FROM dj_cqrs_inbox WHERE handler = %s", [f"sink.{handler}"]
        )
        return dict(rows)  # type: ignore[arg-type]

    def attempts(self, handler: str) -> list[int]:
        """The ``event.retries`` each call of a failure handler saw, in call order."""
        return [
            row[0]
            for row in self.b(
                "SELECT retries FROM sink_attempt WHERE handler = %s ORDER BY id", [handler]
            )
        ]

    # -- processes ---------------------------------------------------------------------------
    def ready(self) -> bool:
        if self.kind == "rabbitmq":
            return bool(self.client.consuming(self.queue))
        return bool(self.client.bound(self.exchange, self.queue))

    def start_consumer(self, *args: str) -> Any:
        process = self.handler.start("cqrs_consume", *args)
        # Messages published before the queue is bound are unroutable: wait for the binding.
        deadline = time.monotonic() + 30
        while not self.ready():
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"consumer not ready (exit code {process.poll()}); log:\n{log_text(process)[-4000:]}"
                )
            time.sleep(0.2)
        return process

    def dead_letters(self) -> int:
        return int(self.client.count(self.dlq))

    def close(self) -> None:
        self.client.close()


@contextlib.contextmanager
def event_fleet(kind: str, **env: str) -> Iterator[EventFleet]:
    run = unique("ev")
    with pg_database(f"{run}_a") as emitter_db, pg_database(f"{run}_b") as handler_db:
        fleet = EventFleet(kind, run, emitter_db, handler_db, env)
        try:
            fleet.emitter.migrate()
            fleet.handler.migrate()
            yield fleet
        finally:
            fleet.emitter.stop_all()
            fleet.handler.stop_all()
            fleet.close()
            if kind == "kombu":
                redis_cleanup(run)
            else:
                rabbit_cleanup(fleet.exchange, [fleet.queue, fleet.dlq])


@pytest.fixture(params=["rabbitmq", "kombu"])
def kind(request: Any, rabbitmq: None, postgres: None) -> str:
    if request.param == "kombu":
        require(REDIS_HOST, REDIS_PORT, "Redis")
    return str(request.param)


def matches(handler: str, committed: dict[str, tuple[str, str]]) -> set[str]:
    return {
        event_id for event_id, (name, _key) in committed.items() if name in STREAM_HANDLERS[handler]
    }


def wait_all_handled(
    fleet: EventFleet, expected: dict[str, set[str]], timeout: float, consumer: Any
) -> None:
    def done() -> bool:
        return all(fleet.handled_count(handler) >= len(ids) for handler, ids in expected.items())

    try:
        wait_until(done, timeout, interval=0.5, message="every committed event handled")
    except AssertionError:
        counts = {
            handler: (fleet.handled_count(handler), len(ids)) for handler, ids in expected.items()
        }
        raise AssertionError(
            f"handled/expected per handler: {counts}; pending in A's outbox: {fleet.pending()};"
            f" dead letters: {fleet.dead_letters()}\nconsumer log:\n{log_text(consumer)[-6000:]}"
        ) from None
    time.sleep(1.5)  # a duplicate or a late extra would show up now


def per_key_seqs(rows: list[tuple[str, str, str, int]]) -> dict[str, list[int]]:
    seqs: dict[str, list[int]] = collections.defaultdict(list)
    for _event_id, _name, key, seq in rows:
        seqs[key].append(seq)
    return seqs


def assert_exactly_once(
    fleet: EventFleet, handler: str, expected: set[str], rolled_back: set[str]
) -> list[tuple[str, str, str, int]]:
    rows = fleet.handled(handler)
    counts = collections.Counter(row[0] for row in rows)
    duplicates = {event_id: n for event_id, n in counts.items() if n > 1}
    assert not duplicates, (
        f"{handler}: {len(duplicates)} events handled more than once, e.g. {list(duplicates.items())[:5]}"
    )
    assert not set(counts) & rolled_back, f"{handler}: handled events of rolled-back transactions"
    missing = expected - set(counts)
    assert not missing, (
        f"{handler}: {len(missing)} committed events never handled, e.g. {sorted(missing)[:5]}"
    )
    assert set(counts) == expected, (
        f"{handler}: handled events that it does not match: {sorted(set(counts) - expected)[:5]}"
    )
    return rows


def assert_seqs_match_the_outbox(fleet: EventFleet, rows: list[tuple[str, str, str, int]]) -> None:
    outbox = fleet.outbox_seqs()
    wrong = [(row, outbox.get(row[0])) for row in rows if outbox.get(row[0]) != (row[2], row[3])]
    assert not wrong, f"key/seq seen by the handler differ from A's outbox: {wrong[:5]}"


def assert_stream_emitted(
    fleet: EventFleet, committed: dict[str, tuple[str, str]], rolled_back: set[str]
) -> None:
    """What A itself holds: exactly the committed events in its outbox, per key seq 1..n in
    commit order, and one business row update per committed event."""
    outbox = fleet.outbox_seqs()
    assert set(outbox) == set(committed), "A's outbox holds other events than the committed ones"
    assert rolled_back and not rolled_back & set(outbox)
    by_key: dict[str, list[int]] = collections.defaultdict(list)
    for key, seq in outbox.values():
        by_key[key].append(seq)
    gaps = {
        key: seqs for key, seqs in by_key.items() if sorted(seqs) != list(range(1, len(seqs) + 1))
    }
    assert not gaps, f"per-key sequences with gaps or repeats: {list(gaps.items())[:3]}"
    assert fleet.a("SELECT sum(updates) FROM shop_order")[0][0] == len(committed)


# -- 1. the stream, one worker -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "events", "keys"),
    [
        pytest.param("rabbitmq", 5000, 500, id="rabbitmq"),
        pytest.param("kombu", 600, 60, id="kombu"),
    ],
    indirect=["kind"],
)
def test_stream_of_committed_events_handled_exactly_once_in_key_order(
    kind: str, events: int, keys: int
) -> None:
    with event_fleet(kind) as fleet:
        consumer = fleet.start_consumer("-w", "1")
        out = fleet.emitter.manage(
            "it_emit",
            "--events",
            str(events),
            "--keys",
            str(keys),
            "--per-tx",
            "10",
            "--rollback-every",
            "7",
            timeout=300,
        )
        summary = json.loads(out.stdout)
        committed, rolled_back = fleet.committed(), fleet.rolled_back()
        assert summary["committed"] == len(committed) and summary["rolled_back"] == len(rolled_back)
        assert len(committed) + len(rolled_back) == events and len(rolled_back) >= events // 10
        assert {name for name, _key in committed.values()} == set(STREAM_NAMES)
        assert_stream_emitted(fleet, committed, rolled_back)

        expected = {handler: matches(handler, committed) for handler in STREAM_HANDLERS}
        wait_all_handled(fleet, expected, 150, consumer)
        wait_until(lambda: fleet.pending() == 0, 30, message="A's outbox published")
        for handler, ids in expected.items():
            rows = assert_exactly_once(fleet, handler, ids, rolled_back)
            assert_seqs_match_the_outbox(fleet, rows)
            # One worker: a handler gets the events of a key in emit order.
            disorder = {
                key: seqs for key, seqs in per_key_seqs(rows).items() if seqs != sorted(set(seqs))
            }
            assert not disorder, f"{handler}: per-key order broken: {list(disorder.items())[:3]}"
        # The inbox recorded each (handler, event) once, next to the handlers' own rows.
        for handler, ids in expected.items():
            inbox = fleet.inbox(handler)
            assert set(inbox) == ids and set(inbox.values()) == {"handled"}
        assert {row[0] for row in fleet.b("SELECT DISTINCT handler FROM dj_cqrs_inbox")} == {
            f"sink.{h}" for h in expected
        }
        assert fleet.dead_letters() == 0
        assert stop_process(consumer) == 0, log_text(consumer)[-3000:]


# -- 2. chaos: workers, relay and emitter killed -----------------------------------------------


def test_workers_relay_and_emitter_killed_still_exactly_once(
    rabbitmq: None, postgres: None
) -> None:
    events, keys, crash_tx = 2000, 200, 80
    with event_fleet("rabbitmq", IT_OUTBOX_GRACE="0.3") as fleet:
        consumer = fleet.start_consumer("-w", "2")
        relay_args = ["cqrs_relay", "--interval", "0.1", "--min-age", "0.3", "--batch", "50"]
        relay = fleet.emitter.start(*relay_args)
        emit_args = [
            "it_emit",
            "--events",
            str(events),
            "--keys",
            str(keys),
            "--per-tx",
            "10",
            "--rollback-every",
            "7",
            "--pause",
            "0.005",
        ]
        emitter = fleet.emitter.start(*emit_args, "--crash-at-tx", str(crash_tx))
        worker_kills: list[int] = []

        def emitted_count() -> int:
            return int(
                fleet.a("SELECT count(*) FROM shop_emitted")[0][0]
                + fleet.a("SELECT count(*) FROM shop_rolledback")[0][0]
            )

        stop = threading.Event()

        def kill_workers() -> None:
            # SIGKILL one worker four times while the stream is being handled; the supervisor
            # starts a new one each time.
            for threshold in (400, 1000, 1600, 2200):
                while (
                    not stop.is_set()
                    and fleet.b("SELECT count(*) FROM sink_handled")[0][0] < threshold
                ):
                    time.sleep(0.05)
                if stop.is_set():
                    return
                deadline = time.monotonic() + 10
                workers = child_pids(consumer.pid)
                while len(workers) < 2 and time.monotonic() < deadline:  # a restart in progress
                    time.sleep(0.05)
                    workers = child_pids(consumer.pid)
                if workers:
                    victim = workers[len(worker_kills) % len(workers)]
                    os.kill(victim, signal.SIGKILL)
                    worker_kills.append(victim)

        killer = threading.Thread(target=kill_workers, daemon=True)
        killer.start()
        try:
            # The emitter kills itself right after the COMMIT of transaction 80, before that
            # transaction's events were handed to the publisher.
            emitter.wait(120)
            assert emitter.returncode == -signal.SIGKILL, log_text(emitter)[-3000:]
            stranded = fleet.pending()
            # The emitter goes on where it stopped; from now on only the relay publishes
            # (outbox_publish="relay"), and it is SIGKILLed once while it works, then restarted.
            fleet.emitter.env["IT_OUTBOX_PUBLISH"] = "relay"
            emitter = fleet.emitter.start(*emit_args, "--resume")
            wait_until(
                lambda: emitted_count() >= 10 * crash_tx + 400 or emitter.poll() is not None, 60
            )
            os.killpg(relay.pid, signal.SIGKILL)
            relay.wait(10)
            time.sleep(0.5)
            relay = fleet.emitter.start(*relay_args)
            emitter.wait(180)
            assert emitter.returncode == 0, log_text(emitter)[-3000:]

            committed, rolled_back = fleet.committed(), fleet.rolled_back()
            assert len(committed) + len(rolled_back) == events
            assert {tx for (tx,) in fleet.a("SELECT DISTINCT tx FROM shop_emitted")} >= {
                crash_tx - 1,
                crash_tx,
                crash_tx + 1,
            }
            assert_stream_emitted(fleet, committed, rolled_back)
            expected = {handler: matches(handler, committed) for handler in STREAM_HANDLERS}
            wait_until(lambda: fleet.pending() == 0, 60, message="A's outbox published")
            # "latest" (ordered=True) skips events older than one it ran: wait for the others.
            wait_all_handled(fleet, {h: expected[h] for h in ("orders", "paid")}, 150, consumer)
            wait_until(
                lambda: len(fleet.inbox("latest")) >= len(expected["latest"]),
                30,
                message="ordered handler done",
            )
        finally:
            stop.set()
            killer.join(10)
        assert len(worker_kills) == 4, (worker_kills, fleet.b("SELECT count(*) FROM sink_handled"))

        for handler in ("orders", "paid"):
            rows = assert_exactly_once(fleet, handler, expected[handler], rolled_back)
            assert_seqs_match_the_outbox(fleet, rows)

        # ordered=True: no duplicate, nothing rolled back, never an older event of a key after a
        # newer one, and the newest event of every key was run.
        rows = fleet.handled("latest")
        counts = collections.Counter(row[0] for row in rows)
        assert (
            max(counts.values()) == 1
            and not set(counts) & rolled_back
            and set(counts) <= expected["latest"]
        )
        assert_seqs_match_the_outbox(fleet, rows)
        backwards = {
            key: seqs for key, seqs in per_key_seqs(rows).items() if seqs != sorted(set(seqs))
        }
        assert not backwards, f"ordered handler went backwards: {list(backwards.items())[:3]}"
        newest: dict[str, int] = {}
        for key, seq in fleet.outbox_seqs().values():
            newest[key] = max(seq, newest.get(key, 0))
        last_run = {key: seqs[-1] for key, seqs in per_key_seqs(rows).items()}
        assert last_run == newest
        # Nothing missing there either: each event was run or skipped as stale (its inbox row says
        # which), and what ran is what the handler wrote.
        inbox = fleet.inbox("latest")
        assert set(inbox) == expected["latest"] and len(inbox) == len(expected["latest"])
        assert {event_id for event_id, status in inbox.items() if status == "handled"} == set(
            counts
        )
        stale = sum(1 for status in inbox.values() if status == "ignored_stale")
        assert stale == len(expected["latest"]) - len(counts)
        for handler in ("orders", "paid"):
            assert set(fleet.inbox(handler).values()) == {"handled"}

        assert fleet.dead_letters() == 0
        # The supervisor replaced every killed worker and never gave up.
        assert child_pids(consumer.pid), log_text(consumer)[-3000:]
        assert stop_process(consumer) == 0, log_text(consumer)[-3000:]
        assert stop_process(relay) == 0, log_text(relay)[-3000:]
        print(
            f"chaos: {len(committed)} committed, {stranded} stranded by the emitter's crash,"
            f" worker kills {worker_kills}, {stale} skipped as stale by the ordered handler"
        )


# -- 3. failures: retried, dead-lettered, replayed, Permanent ----------------------------------


def dead_letter_summary(fleet: EventFleet, name: str) -> list[list[str]]:
    out = fleet.handler.manage("cqrs_dead_letters", "summary", "--cqrs-id", name).stdout
    return [line.split("\t") for line in out.splitlines() if line.strip()]


def test_failing_handlers_retry_dead_letter_and_replay(kind: str) -> None:
    # B also has a replica model here (IT_SINK_REPLICA): its messages share the queue with the
    # events, and the failing events do not disturb them.
    env = {
        "IT_CQRS_MAX_RETRIES": "3",
        "IT_CQRS_RETRY_DELAY": "0.5",
        "IT_CQRS_RETRY_BACKOFF": "1",
        "IT_SINK_REPLICA": "1",
    }
    with event_fleet(kind, **env) as fleet:
        consumer = fleet.start_consumer("-w", "1")
        fleet.client.publish(
            fleet.exchange, "it_mirror", body("it_mirror", 1, data={"name": "before"})
        )
        ids = json.loads(
            fleet.emitter.manage(
                "it_emit_list",
                input=json.dumps(
                    [
                        {"name": "flaky.op", "key": "f1", "data": {"n": 1}},
                        {"name": "broken.op", "key": "b1", "data": {"n": 2}},
                        {"name": "poison.op", "key": "p1", "data": {"n": 3}},
                    ]
                ),
            ).stdout
        )
        flaky_id, broken_id, poison_id = ids
        fleet.client.publish(
            fleet.exchange, "it_mirror", body("it_mirror", 2, data={"name": "after"})
        )

        # Fails twice, then succeeds: handled once, on its second retry.
        wait_until(lambda: fleet.handled_count("flaky") >= 1, 30, message="flaky handled")
        # Always fails: 1 + CQRS_MAX_RETRIES attempts, then a dead letter; Permanent: at once.
        try:
            wait_until(lambda: fleet.dead_letters() >= 2, 30, message="two dead letters")
        except AssertionError:
            raise AssertionError(
                f"attempts: {fleet.b('SELECT handler, retries FROM sink_attempt ORDER BY id')}\n{log_text(consumer)[-5000:]}"
            ) from None
        time.sleep(1)
        assert fleet.handled("flaky") == [(flaky_id, "flaky.op", "f1", 1)]
        assert fleet.attempts("flaky") == [0, 1, 2]
        assert fleet.b("SELECT retries FROM sink_handled WHERE handler = 'flaky'") == [(2,)]
        assert fleet.attempts("broken") == [0, 1, 2, 3]
        assert fleet.attempts("poison") == [0]
        assert fleet.handled_count("broken") == 0 and fleet.handled_count("poison") == 0
        assert fleet.dead_letters() == 2
        assert fleet.b("SELECT id, name FROM mirror_mirroritem ORDER BY id") == [
            (1, "before"),
            (2, "after"),
        ]

        # The reasons are visible per event name.
        assert ["broken.op", "max_retries", "1"] in dead_letter_summary(fleet, "broken.op")
        assert ["poison.op", "permanent", "1"] in dead_letter_summary(fleet, "poison.op")
        assert all(
            row[0] in ("poison.op", "total") for row in dead_letter_summary(fleet, "poison.op")
        )
        dump = fleet.handler.manage(
            "cqrs_dead_letters", "dump", "--headers", "--cqrs-id", "broken.op"
        ).stdout
        letters = [json.loads(line) for line in dump.splitlines() if line.strip()]
        assert len(letters) == 1, dump
        text = json.dumps(letters[0])
        assert broken_id in text and "sink.broken" in text and "broken until fixed" in text, text
        poison_dump = fleet.handler.manage(
            "cqrs_dead_letters", "dump", "--headers", "--cqrs-id", "poison.op"
        ).stdout
        assert poison_id in poison_dump and "cannot be handled" in poison_dump, poison_dump

        # "Fix" the handler, replay its dead letter: handled once; the Permanent one stays.
        fleet.b_execute("INSERT INTO sink_switch (name, \"on\") VALUES ('fixed', true)")
        out = fleet.handler.manage("cqrs_dead_letters", "retry", "--cqrs-id", "broken.op").stdout
        assert re.search(r"Retried 1 dead letter", out), out
        wait_until(
            lambda: fleet.handled_count("broken") == 1, 30, message="replayed letter handled"
        )
        time.sleep(1)
        assert fleet.handled("broken") == [(broken_id, "broken.op", "b1", 1)]
        assert fleet.attempts("broken") == [0, 1, 2, 3, 0]
        assert fleet.dead_letters() == 1
        assert dead_letter_summary(fleet, "broken.op")[-1] == ["total", "", "0"]
        assert ["poison.op", "permanent", "1"] in dead_letter_summary(fleet, "poison.op")
        # The flaky event is not run again by anything that happened since.
        assert fleet.handled_count("flaky") == 1
        assert stop_process(consumer) == 0, log_text(consumer)[-3000:]


def test_ordered_handler_waits_behind_a_failing_event_and_is_released_by_its_dead_letter(
    kind: str,
) -> None:
    env = {"IT_CQRS_MAX_RETRIES": "3", "IT_CQRS_RETRY_DELAY": "0.5", "IT_CQRS_RETRY_BACKOFF": "1"}
    with event_fleet(kind, **env) as fleet:
        consumer = fleet.start_consumer("-w", "1")
        steps = [
            # key s1: its first event fails twice; the two newer ones must not overtake it
            {"name": "step.x", "key": "s1", "data": {"mode": "fail:2"}},
            {"name": "step.x", "key": "s1", "data": {"mode": "ok"}},
            {"name": "step.y", "key": "s1", "data": {"mode": "ok"}},
            # key s2: its first event is refused (Permanent): the newer one runs, not waiting more
            {"name": "step.x", "key": "s2", "data": {"mode": "permanent"}},
            {"name": "step.y", "key": "s2", "data": {"mode": "ok"}},
        ]
        ids = json.loads(fleet.emitter.manage("it_emit_list", input=json.dumps(steps)).stdout)
        wait_until(lambda: fleet.handled_count("steps") >= 4, 30, message="steps handled")
        wait_until(lambda: fleet.dead_letters() >= 1, 30, message="the refused step dead-lettered")
        time.sleep(1)
        rows = fleet.handled("steps")
        assert [(key, seq) for _id, _name, key, seq in rows if key == "s1"] == [
            ("s1", 1),
            ("s1", 2),
            ("s1", 3),
        ]
        assert [(key, seq) for _id, _name, key, seq in rows if key == "s2"] == [("s2", 2)]
        attempts = dict(
            fleet.b(
                "SELECT event_id, count(*) FROM sink_attempt WHERE handler = 'steps' GROUP BY event_id"
            )
        )
        # The failing one ran three times; the ones that waited ran once each, on a retry.
        assert attempts == {ids[0]: 3, ids[1]: 1, ids[2]: 1, ids[3]: 1, ids[4]: 1}
        retried = dict(
            fleet.b("SELECT event_id, retries FROM sink_handled WHERE handler = 'steps'")
        )
        assert retried[ids[0]] == 2 and retried[ids[1]] >= 1 and retried[ids[2]] >= 1, retried
        assert ["step.x", "permanent", "1"] in dead_letter_summary(fleet, "step.x")

        # Replaying the refused (older) event later finds the handler past it: skipped, not run.
        out = fleet.handler.manage("cqrs_dead_letters", "retry", "--cqrs-id", "step.x").stdout
        assert re.search(r"Retried 1 dead letter", out), out
        wait_until(
            lambda: fleet.inbox("steps").get(ids[3]) == "ignored_stale",
            30,
            message="replay skipped as stale",
        )
        time.sleep(0.5)
        assert fleet.handled("steps") == rows
        assert (
            dict(
                fleet.b(
                    "SELECT event_id, count(*) FROM sink_attempt WHERE handler = 'steps' GROUP BY event_id"
                )
            )
            == attempts
        )
        assert fleet.dead_letters() == 0
        assert stop_process(consumer) == 0, log_text(consumer)[-3000:]


# -- 4. model event sources --------------------------------------------------------------------


def challenges(fleet: EventFleet, steps: list[dict[str, Any]]) -> dict[str, int]:
    out = fleet.emitter.manage("it_challenges", input=json.dumps(steps)).stdout
    return json.loads(out.strip().splitlines()[-1])["outbox"]  # type: ignore[no-any-return]


def event_sources(fleet: EventFleet, *args: str) -> tuple[int, int, int, int]:
    """Run ``cqrs_event_sources``; ``(instances, emitted, emitted before, failed)`` from its summary."""
    out = fleet.emitter.manage("cqrs_event_sources", *args).stdout
    found = re.search(
        r"(\d+) instance\(s\), (\d+) event\(s\) emitted, (\d+) emitted before, (\d+) failed", out
    )
    assert found, out
    return tuple(int(n) for n in found.groups())  # type: ignore[return-value]


def test_time_based_event_source_emits_each_key_once(kind: str) -> None:
    with event_fleet(kind) as fleet:
        consumer = fleet.start_consumer("-w", "1")
        # A save runs the source (in its transaction; published after commit): "created" for each,
        # "ending" for the one ending within two days; a rolled-back save emits nothing; saving
        # again emits nothing new.
        outbox = challenges(
            fleet,
            [
                {"op": "create", "id": 1, "ends_in_hours": 24},
                {"op": "create", "id": 2, "ends_in_hours": 24 * 5},
                {"op": "create", "id": 3, "ends_in_hours": 24 * 30},
                {"op": "rollback_create", "id": 9, "ends_in_hours": 1},
                {"op": "save", "id": 1},
            ],
        )
        assert outbox == {"challenge.created": 3, "challenge.ending": 1}

        # Time passes for challenge 2 (no save, no signal): nothing until the command runs...
        assert challenges(fleet, [{"op": "shift", "id": 2, "ends_in_hours": 12}]) == outbox
        assert event_sources(fleet) == (3, 1, 4, 0)
        outbox = challenges(fleet, [])
        assert outbox == {"challenge.created": 3, "challenge.ending": 2}
        # ...and a second run (or one restricted to the model, in batches of one) emits nothing.
        assert event_sources(fleet) == (3, 0, 5, 0)
        assert event_sources(fleet, "--model", "shop.Challenge", "--batch", "1") == (3, 0, 5, 0)
        assert challenges(fleet, []) == outbox

        # A save that makes challenge 3 due emits through the source.
        outbox = challenges(
            fleet, [{"op": "shift", "id": 3, "ends_in_hours": 1}, {"op": "save", "id": 3}]
        )
        assert outbox == {"challenge.created": 3, "challenge.ending": 3}
        assert event_sources(fleet) == (3, 0, 6, 0)
        assert challenges(fleet, []) == outbox

        emitted = sorted(fleet.a("SELECT name, key FROM dj_cqrs_event_source"))
        expected = sorted(
            [
                (name, str(pk))
                for name in ("challenge.created", "challenge.ending")
                for pk in (1, 2, 3)
            ]
        )
        assert emitted == expected
        wait_until(
            lambda: fleet.handled_count("challenges") >= 6, 30, message="challenge events handled"
        )
        time.sleep(1)
        handled = sorted((name, key) for _id, name, key, _seq in fleet.handled("challenges"))
        assert handled == expected
        # Per key: created (seq 1) before ending (seq 2).
        seqs = {(name, key): seq for _id, name, key, seq in fleet.handled("challenges")}
        assert all(
            seqs[("challenge.created", str(pk))] == 1 and seqs[("challenge.ending", str(pk))] == 2
            for pk in (1, 2, 3)
        ), seqs
        assert fleet.dead_letters() == 0
        assert stop_process(consumer) == 0, log_text(consumer)[-3000:]


# -- 5. partitioned handler queues (CQRS['replica']['partitions']) ---------------------------


def test_partitioned_events_of_one_key_keep_their_order_across_names(
    rabbitmq: None, postgres: None
) -> None:
    """partitions = 4 and two workers: a key's events reach one partition whatever their name
    (``order.created``, ``order.paid``, ``invoice.*``), since order and ``seq`` are per key
    (docs/events.md). Handlers that match several names see each key in ``seq`` order, and the
    ``ordered=True`` handler skips nothing as stale."""
    partitions = 4
    with event_fleet(
        "rabbitmq", IT_REPLICA_OPTIONS=json.dumps({"partitions": partitions})
    ) as fleet:
        queues = [f"{fleet.queue}.p{i}" for i in range(partitions)]
        try:
            consumer = fleet.handler.start("cqrs_consume", "-w", "2")
            wait_until(
                lambda: all(fleet.client.consuming(q) for q in queues),
                30,
                message=f"the workers on every partition; log:\n{log_text(consumer)[-3000:]}",
            )
            fleet.emitter.manage(
                "it_emit", "--events", "1200", "--keys", "30", "--per-tx", "10", timeout=300
            )
            committed, rolled_back = fleet.committed(), fleet.rolled_back()
            expected = {handler: matches(handler, committed) for handler in STREAM_HANDLERS}
            wait_all_handled(fleet, expected, 150, consumer)
            for handler, ids in expected.items():
                rows = assert_exactly_once(fleet, handler, ids, rolled_back)
                disorder = {
                    key: seqs
                    for key, seqs in per_key_seqs(rows).items()
                    if seqs != sorted(set(seqs))
                }
                assert not disorder, (
                    f"{handler}: per-key order broken: {list(disorder.items())[:3]}"
                )
            statuses = collections.Counter(fleet.inbox("latest").values())
            assert statuses == {"handled": len(expected["latest"])}, statuses
            assert fleet.dead_letters() == 0
            assert stop_process(consumer) == 0, log_text(consumer)[-3000:]
        finally:
            channel = fleet.client.connection.channel()
            for name in (f"{fleet.queue}.partitions", f"{fleet.queue}.partitions.unkeyed"):
                with contextlib.suppress(Exception):
                    channel.exchange_delete(name)
