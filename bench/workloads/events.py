"""Group ``events``: domain events (issue 13), dj_cqrs only - django-cqrs 3.1.0 has no domain
events, so there is no ``theirs`` column; the group runs whichever peers are selected, ours only.

* ``emit``: ``bench/eventbench/run_events.py`` in our Python against a fresh database: the cost of
  ``emit()`` of a small event (5 fields) in a transaction that also saves one ``PlainItem`` row
  (the outbox group's plain row) against the same transaction without it, and of an autocommit
  ``emit()`` against an autocommit ``save()`` of the same row; default publishing (the
  dispatcher's thread, publisher confirms) and, as a second set of lines, with
  ``outbox_publish = 'relay'`` (the write alone); then the publication rate (5,000 emits, each in
  its own transaction, until all are in a sink queue bound to ``dj_cqrs.event.#``) and a relay
  pass over a backlog of 50,000 event rows. Persistent connections, medians, blocks of 50.
* ``handle``: ``manage.py cqrs_consume -w 1`` and ``-w 2`` of a service (``bench/eventbench``)
  whose one handler is either ``atomic`` (inserts one row in the transaction of its inbox row)
  or ``atomic=False`` and does nothing (what the inbox alone costs), fed a queue of 20,000
  pre-published events; timed from starting the command until the handler's table (or the
  inbox) holds every event.

Knobs: BENCH_EVENTS_N (operations per kind of the emit cost, 1000), BENCH_EVENTS_PUBLISH (5000),
BENCH_EVENTS_RELAY (50000; 0 skips), BENCH_EVENTS_RELAY_MODE_N (1000; 0 skips the relay-mode
lines), BENCH_EVENTS_HANDLE (20000 events per consumer run; 0 skips), BENCH_EVENTS_TIMEOUT
(seconds one consumer run may take, 300). The group does not follow ``--rows``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from typing import Any

from framework import ROOT, Context, Peer, Result, log, workload

from workloads.replica import Consumer, db_execute, depth, wait_depth

PROJECT = ROOT / "bench" / "eventbench"
SCRIPT = PROJECT / "run_events.py"
N = int(os.environ.get("BENCH_EVENTS_N", "1000"))
PUBLISH = int(os.environ.get("BENCH_EVENTS_PUBLISH", "5000"))
RELAY = int(os.environ.get("BENCH_EVENTS_RELAY", "50000"))
RELAY_MODE_N = int(os.environ.get("BENCH_EVENTS_RELAY_MODE_N", str(N)))
HANDLE = int(os.environ.get("BENCH_EVENTS_HANDLE", "20000"))
TIMEOUT = float(os.environ.get("BENCH_EVENTS_TIMEOUT", "300"))
WORKERS = (1, 2)
POLL = 0.05
NAME = "order.paid"
PATTERN = "order.*"
#: The table each handler leaves one row per event in.
HANDLER_TABLES = {"atomic": "evapp_handledorder", "noop": "dj_cqrs_inbox"}
NOT_THEIRS = "django-cqrs 3.1.0 has no domain events: ours only"


class EventService:
    """The consuming service of ``bench/eventbench`` (``manage.py``), what ``replica.Consumer``
    needs of a service: ``peer``, ``dir`` and ``env``."""

    def __init__(self, peer: Peer, db: str, exchange: str, queue: str) -> None:
        self.peer = peer
        self.db = db
        self.dir = PROJECT
        self.env = {
            **os.environ,
            "BENCH_DB": db,
            "BENCH_EXCHANGE": exchange,
            "BENCH_QUEUE": queue,
            "PYTHONUNBUFFERED": "1",
        }
        for name in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE", "BENCH_OUTBOX_PUBLISH"):
            self.env.pop(name, None)

    def with_handler(self, kind: str) -> EventService:
        self.env["BENCH_EVENTS_HANDLER"] = kind
        return self

    def manage(self, *args: str) -> None:
        result = subprocess.run(
            [self.peer.python, "manage.py", *args],
            cwd=self.dir,
            env=self.env,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"events manage.py {' '.join(args)} failed:\n{result.stderr[-3000:]}"
            )


# -- emit ---------------------------------------------------------------------------------------------


def run_emitter(ctx: Context, peer: Peer) -> dict[str, Any]:
    db = ctx.create_database("ours_events_emit")
    exchange, _queue = ctx.exchange_and_queue("ours_events_emit")
    env = {
        **os.environ,
        "BENCH_DB": db,
        "BENCH_EXCHANGE": exchange,
        "BENCH_N": str(N),
        "BENCH_PUBLISH_EVENTS": str(PUBLISH),
        "BENCH_RELAY_MODE_N": str(RELAY_MODE_N),
        "BENCH_RELAY_EVENTS": str(RELAY),
    }
    for name in (
        "PYTHONPATH",
        "DJANGO_SETTINGS_MODULE",
        "BENCH_QUEUE",
        "BENCH_OUTBOX_PUBLISH",
        "BENCH_EVENTS_HANDLER",
    ):
        env.pop(name, None)
    result = subprocess.run(
        [peer.python, str(SCRIPT)],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        raise RuntimeError(f"events emit bench failed:\n{result.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    for problem in figures.get("mismatches", []):
        log(f"events: MISMATCH: {problem}")
    return figures


def cost_line(
    figures: dict[str, Any], prefix: str, metric: str, kind: str, plain_kind: str, note: str
) -> Result:
    ours, plain = figures[f"{prefix}{kind}_us"], figures[f"{prefix}{plain_kind}_us"]
    per_s = f"ops/s: plain {1e6 / plain:,.0f}, ours {1e6 / ours:,.0f}"
    extra = f"emit adds {ours - plain:.0f} µs"
    return Result(
        "events",
        metric,
        ours / 1000,
        None,
        f"ours {ours / plain:.2f}x plain; {extra}; {per_s}; {note}",
        plain=plain / 1000,
    )


@workload("events", "emit")
def emit_cost(ctx: Context) -> list[Result]:
    peer = ctx.peer("ours")
    if peer is None:
        log("events: skipped (the group measures dj_cqrs only: add ours to --peers)")
        return []
    log(
        f"events: {N} operations per kind (emit cost), {PUBLISH} emits published, relay backlog of {RELAY} events (ours)"
    )
    figures = run_emitter(ctx, peer)
    rows = []
    if "txn_emit_us" in figures:
        rows.append(
            cost_line(
                figures,
                "",
                "emit() + save() in one transaction, per 1000",
                "txn_emit",
                "txn_plain",
                f"plain: the same transaction with the save() only; {NOT_THEIRS}",
            )
        )
        rows.append(
            cost_line(
                figures,
                "",
                "emit() alone, autocommit, per 1000",
                "auto_emit",
                "auto_plain",
                "plain: one save() of the same row in autocommit (one INSERT)",
            )
        )
    if "relaymode_txn_emit_us" in figures:
        rows.append(
            cost_line(
                figures,
                "relaymode_",
                "the same with outbox_publish='relay', per 1000",
                "txn_emit",
                "txn_plain",
                "nothing publishes in the process: the write alone",
            )
        )
        rows.append(
            cost_line(
                figures,
                "relaymode_",
                "emit() alone, autocommit, outbox_publish='relay', per 1000",
                "auto_emit",
                "auto_plain",
                "nothing publishes in the process",
            )
        )
    if "publish_s" in figures:
        count = int(figures["publish_events"])
        rows.append(
            Result(
                "events",
                f"publish: {count} emits, own transactions, until all in the sink",
                figures["publish_s"],
                None,
                f"{figures['publish_events_per_s']:,.0f} events/s end to end, publisher confirms; the emit loop"
                f" took {figures['publish_emit_s']:.2f}s ({count / figures['publish_emit_s']:,.0f} emits/s)",
            )
        )
    if "relay_s" in figures:
        rows.append(
            Result(
                "events",
                f"relay: backlog of {int(figures['relay_published'])} event rows",
                figures["relay_s"],
                None,
                f"{figures['relay_events_per_s']:,.0f} events/s, one Relay(min_age=0).run_once(), publisher confirms"
                f" ({int(figures['relay_events'])} written for it, 10 per key, + the relay-mode lines' rows)",
            )
        )
    problems = figures.get("mismatches", [])
    rows.append(
        Result(
            "events",
            "checks (emit): messages in the sink / expected, bytes of one message",
            None,
            None,
            (
                "MISMATCH!!! " + " | ".join(problems) + " || "
                if problems
                else "all rows, sequences and messages as expected; "
            )
            + f"{figures.get('sink_count')}/{figures.get('sink_expected')} msgs, {figures.get('wire_bytes')} B"
            f" ({figures.get('routing_key')})",
        )
    )
    return rows


# -- handle -----------------------------------------------------------------------------------------


def event_body(i: int, key: int, seq: int) -> bytes:
    """A domain event as ``emit()`` publishes it (docs/wire-format.md): keys in wire order, compact
    JSON, five data fields."""
    return (
        json.dumps(
            {
                "dj_cqrs_event": 1,
                "id": str(uuid.uuid4()),
                "name": NAME,
                "key": str(key),
                "seq": seq,
                "version": 1,
                "data": {
                    "order_id": key,
                    "amount": f"@{1234 + i % 100}.56@",
                    "currency": "EUR",
                    "customer": f"customer-{i % 977:04d}",
                    "placed_at": f"2026-01-01T12:{i // 60 % 60:02d}:{i % 60:02d}+00:00",
                },
                "meta": None,
                "occurred_at": "2026-12-02T12:00:00.123456+00:00",
                "correlation_id": None,
                "retries": 0,
                "expires": None,
            },
            separators=(",", ":"),
        )
        .replace('"@', "")
        .replace('@"', "")
        .encode()
    )


def feed(ctx: Context, exchange: str, queue: str, n: int) -> None:
    """Declare and bind the queue as ``cqrs_consume`` does, purge it, publish ``n`` events (four
    per key, seq 1..4), persistent, without confirms; wait until the broker holds them all."""
    import pika

    props = pika.BasicProperties(content_type="text/plain", delivery_mode=2)
    with ctx.amqp_channel() as channel:
        channel.exchange_declare(exchange=exchange, exchange_type="topic", durable=True)
        channel.queue_declare(queue, durable=True)
        channel.queue_bind(queue, exchange, routing_key=f"dj_cqrs.event.{PATTERN}")
        channel.queue_purge(queue)
        for i in range(n):
            channel.basic_publish(
                exchange, f"dj_cqrs.event.{NAME}", event_body(i, i // 4, i % 4 + 1), props
            )
    wait_depth(ctx, [queue], n, 120)


def handle_once(
    ctx: Context, service: EventService, kind: str, workers: int, n: int
) -> dict[str, Any]:
    exchange, queue = service.env["BENCH_EXCHANGE"], service.env["BENCH_QUEUE"]
    db_execute(ctx, service.db, "TRUNCATE evapp_handledorder, dj_cqrs_inbox")
    db_execute(ctx, service.db, "VACUUM ANALYZE evapp_handledorder")
    db_execute(ctx, service.db, "VACUUM ANALYZE dj_cqrs_inbox")
    feed(ctx, exchange, queue, n)
    table = HANDLER_TABLES[kind]
    conn = ctx.connect(service.db)
    conn.autocommit = True
    done = first = None
    seen = 0
    start = time.perf_counter()
    consumer = Consumer(ctx, service.with_handler(kind), workers, f"events_{kind}_w{workers}")  # type: ignore[arg-type]
    try:
        with conn.cursor() as cur:
            while time.perf_counter() - start < TIMEOUT:
                cur.execute(f"SELECT count(*) FROM {table}")
                seen = cur.fetchone()[0]
                now = time.perf_counter()
                if seen and first is None:
                    first = now - start
                if seen >= n:
                    done = now - start
                    break
                consumer.check_alive()
                time.sleep(POLL)
            cur.execute(
                "SELECT (SELECT count(*) FROM evapp_handledorder), (SELECT count(DISTINCT event_id) FROM evapp_handledorder),"
                " (SELECT count(*) FROM dj_cqrs_inbox), (SELECT count(*) FROM dj_cqrs_inbox WHERE status <> 'handled')"
            )
            rows, distinct, inbox, not_handled = cur.fetchone()
    finally:
        consumer.stop()
        conn.close()
    if done is None:
        log(
            f"events handle {kind} -w {workers}: only {seen}/{n} after {TIMEOUT:.0f}s\n{consumer.tail()}"
        )
    left = depth(ctx, queue)[0]
    dead = depth(ctx, f"dead_letter_{queue}")[0]
    problems = []
    expected_rows = n if kind == "atomic" else 0
    if rows != expected_rows or distinct != expected_rows:
        problems.append(
            f"{rows} handler rows ({distinct} distinct events), {expected_rows} expected"
        )
    if inbox != n or not_handled:
        problems.append(f"{inbox} inbox rows ({not_handled} not 'handled'), {n} expected")
    if left or dead:
        problems.append(f"{left} left in the queue, {dead} dead letters")
    return {
        "n": n,
        "seconds": done,
        "first": first,
        "rate": n / done if done else None,
        "steady": (n - 1) / (done - first) if done and first is not None and done > first else None,
        "problems": problems,
    }


@workload("events", "handle")
def handle(ctx: Context) -> list[Result]:
    peer = ctx.peer("ours")
    if peer is None or not HANDLE:
        return []
    exchange, queue = ctx.exchange_and_queue("ours_events_handle")
    service = EventService(peer, ctx.create_database("ours_events_handle"), exchange, queue)
    service.with_handler("atomic").manage("migrate", "--run-syncdb", "-v", "0")
    results = []
    labels = {
        "atomic": "atomic handler inserting a row",
        "noop": "atomic=False handler doing nothing (inbox only)",
    }
    for kind in ("atomic", "noop"):
        rates: dict[int, float] = {}
        for workers in WORKERS:
            log(f"events handle: {HANDLE} events, {labels[kind]}, cqrs_consume -w {workers}")
            outcome = handle_once(ctx, service, kind, workers, HANDLE)
            notes = []
            if outcome["seconds"] is None:
                notes.append(f"TIMEOUT after {TIMEOUT:.0f}s")
            else:
                rates[workers] = outcome["rate"]
                notes.append(
                    f"{HANDLE} in {outcome['seconds']:.1f}s = {outcome['rate']:,.0f} events/s"
                )
                if outcome["steady"]:
                    notes.append(
                        f"{outcome['steady']:,.0f}/s after the first at {outcome['first']:.1f}s"
                    )
                if workers > 1 and 1 in rates:
                    notes.append(f"-w {workers}/-w 1 {rates[workers] / rates[1]:.2f}x")
            notes += [f"MISMATCH!!! {p}" for p in outcome["problems"]] or [
                "every event handled once, queue empty"
            ]
            if not results:
                notes.append(NOT_THEIRS)
            results.append(
                Result(
                    "events",
                    f"handle: {labels[kind]}, -w {workers}, s/1000 events",
                    1000 / outcome["rate"] if outcome["rate"] else None,
                    None,
                    "; ".join(notes),
                )
            )
    return results


__all__ = ["emit_cost", "handle"]
