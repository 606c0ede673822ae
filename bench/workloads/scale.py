"""Group ``scale``: scaling a replica service on RabbitMQ itself (docs/scaling.md). dj_cqrs only:
django-cqrs 3.1.0 has neither partitioned queues nor quorum queues.

* ``partitions``: ``CQRS['replica']['partitions'] = 8``; a backlog of creates of the realistic
  model (``it_product``, as group ``replica``, with the partition header a dj_cqrs master sets)
  pre-published into the 8 partition queues, then applied by 1, 2 and 4 ``cqrs_consume -w 1``
  processes started together; timed from the start until the replica table holds every row,
  plus the steady rate after the first row (start-up excluded). The processes share the
  machine's cores with RabbitMQ and PostgreSQL: the figures say what this machine scales to, not
  what partitions can do on more cores;
* ``queue type``: the same backlog published through the RabbitMQ transport (``produce_many``,
  publisher confirms) into one replica queue declared classic, then quorum, and applied by one
  ``cqrs_consume`` process: what a quorum queue (Raft log, fsync'ed before the confirm) costs on
  a single node.

Environment: ``BENCH_SCALE_MESSAGES`` (default 30000), ``BENCH_SCALE_PROCESSES`` (default
``1,2,4``), ``BENCH_SCALE_TIMEOUT`` (seconds one apply may take, default 300).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from framework import Context, Result, Service, log, workload

from workloads.replica import PRODUCT, Consumer, db_execute, depth

MESSAGES = int(os.environ.get("BENCH_SCALE_MESSAGES", "30000"))
PROCESSES = tuple(int(p) for p in os.environ.get("BENCH_SCALE_PROCESSES", "1,2,4").split(","))
TIMEOUT = float(os.environ.get("BENCH_SCALE_TIMEOUT", "300"))
PARTITIONS = 8
HEADER = "x-cqrs-partition-key"
POLL = 0.05


def _replica(ctx: Context, label: str, options: dict[str, Any]) -> tuple[Service, Service]:
    peer = ctx.peer("ours")
    assert peer is not None
    master, replica = ctx.services(peer, label)
    for service in (master, replica):
        service.env["IT_REPLICA_OPTIONS"] = json.dumps(options)
    _exchange, queue = replica.env["IT_CQRS_EXCHANGE"], replica.env["IT_CQRS_QUEUE"]
    ctx._exchanges.append((f"{queue}.partitions", [f"{queue}.p{i}" for i in range(PARTITIONS)]))
    ctx._exchanges.append((f"{queue}.partitions.unkeyed", [f"{queue}.retry.0"]))
    return master, replica


def _declare_by_consumer(ctx: Context, replica: Service, queues: list[str]) -> None:
    """Let ``cqrs_consume`` declare its topology (with the settings under test), then stop it."""
    consumer = Consumer(ctx, replica, 1, f"declare_{replica.env['IT_CQRS_QUEUE']}")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if all(depth(ctx, q)[1] for q in queues):
                    return
            except Exception:  # noqa: BLE001 - not declared yet
                pass
            consumer.check_alive()
            time.sleep(0.2)
        raise RuntimeError(f"cqrs_consume did not subscribe to {queues}:\n{consumer.tail()}")
    finally:
        consumer.stop()


def _publish_raw(ctx: Context, exchange: str, n: int) -> None:
    """``n`` creates of ``it_product`` as a dj_cqrs master publishes them (with the header)."""
    import pika

    with ctx.amqp_channel() as channel:
        for pk in range(1, n + 1):
            props = pika.BasicProperties(
                content_type="text/plain",
                delivery_mode=2,
                headers={HEADER: f"{PRODUCT.cqrs_id}:{pk}"},
            )
            channel.basic_publish(exchange, PRODUCT.cqrs_id, PRODUCT.body(pk, 0), props)


def _wait_backlog(ctx: Context, queues: list[str], n: int) -> list[int]:
    deadline = time.monotonic() + 120
    while True:
        counts = [depth(ctx, q)[0] for q in queues]
        if sum(counts) >= n:
            return counts
        if time.monotonic() > deadline:
            raise RuntimeError(f"{queues} hold {counts}, expected {n} in all")
        time.sleep(0.2)


def _apply(ctx: Context, replica: Service, processes: int, n: int, label: str) -> dict[str, Any]:
    """Start ``processes`` consumers; seconds until the table holds ``n`` rows, and the rate."""
    conn = ctx.connect(replica.db)
    conn.autocommit = True
    start = time.perf_counter()
    consumers = [Consumer(ctx, replica, 1, f"{label}_{i}") for i in range(processes)]
    first = done = None
    seen = 0
    try:
        with conn.cursor() as cur:
            while time.perf_counter() - start < TIMEOUT:
                cur.execute(f"SELECT count(*) FROM {PRODUCT.table}")
                seen = cur.fetchone()[0]
                now = time.perf_counter() - start
                if seen and first is None:
                    first, first_seen = now, seen
                if seen >= n:
                    done = now
                    break
                for consumer in consumers:
                    consumer.check_alive()
                time.sleep(POLL)
    finally:
        for consumer in consumers:
            consumer.stop()
        conn.close()
    if done is None:
        log(f"scale {label}: only {seen}/{n} after {TIMEOUT:.0f}s\n{consumers[0].tail()}")
        return {"seconds": None, "rate": None, "steady": None, "seen": seen}
    steady = (n - first_seen) / (done - first) if first is not None and done > first else None
    return {"seconds": done, "rate": n / done, "steady": steady, "seen": seen}


def _note(outcome: dict[str, Any], n: int) -> str:
    if outcome["seconds"] is None:
        return f"TIMEOUT: {outcome['seen']}/{n} applied"
    text = f"{n} in {outcome['seconds']:.1f}s = {outcome['rate']:.0f} msg/s"
    if outcome["steady"]:
        text += f", {outcome['steady']:.0f} msg/s after the first row"
    return text


@workload("scale", "partitions")
def partitions(ctx: Context) -> list[Result]:
    if ctx.peer("ours") is None:
        return []
    n = MESSAGES
    _master, replica = _replica(ctx, "part", {"partitions": PARTITIONS})
    exchange, queue = replica.env["IT_CQRS_EXCHANGE"], replica.env["IT_CQRS_QUEUE"]
    queues = [f"{queue}.p{i}" for i in range(PARTITIONS)]
    _declare_by_consumer(ctx, replica, queues)
    results = []
    rates: dict[int, float] = {}
    for processes in PROCESSES:
        with ctx.amqp_channel() as channel:
            for name in queues:
                channel.queue_purge(name)
        db_execute(ctx, replica.db, f"TRUNCATE {PRODUCT.table}")
        db_execute(ctx, replica.db, f"VACUUM ANALYZE {PRODUCT.table}")
        log(
            f"scale partitions: {n} creates over {PARTITIONS} partitions, {processes} cqrs_consume process(es)"
        )
        _publish_raw(ctx, exchange, n)
        spread = _wait_backlog(ctx, queues, n)
        outcome = _apply(ctx, replica, processes, n, f"part_{processes}")
        notes = [_note(outcome, n)]
        if outcome["steady"]:
            rates[processes] = outcome["steady"]
            if processes > 1 and 1 in rates:
                notes.append(f"steady rate {rates[processes] / rates[1]:.2f}x of 1 process")
        if processes == PROCESSES[0]:
            notes.append(f"backlog per partition {min(spread)}..{max(spread)}")
        results.append(
            Result(
                "scale",
                f"apply creates, {PARTITIONS} partitions, {processes} process(es), s/1000 msgs",
                1000 / outcome["rate"] if outcome["rate"] else None,
                None,
                "; ".join(notes),
            )
        )
    return results


_PUBLISH = """
import json, sys, time
from dj_cqrs.core.payload import TransportPayload
from dj_cqrs.transport import get_transport
rows = json.loads(sys.stdin.read())
payloads = [TransportPayload("SAVE", "it_product", data, data["id"]) for data in rows]
transport = get_transport()
transport.produce_many(payloads[:100])  # connect, warm up
start = time.perf_counter()
for i in range(100, len(payloads), 1000):
    transport.produce_many(payloads[i : i + 1000])
print(json.dumps({"seconds": time.perf_counter() - start, "count": len(payloads) - 100}))
"""


def _rows(n: int) -> list[dict[str, Any]]:
    rows = []
    for pk in range(1, n + 1):
        data = dict(zip(PRODUCT.columns, PRODUCT.values(pk, 0), strict=True))
        rows.append(data)
    return rows


@workload("scale", "queue type")
def queue_type(ctx: Context) -> list[Result]:
    if ctx.peer("ours") is None:
        return []
    n = MESSAGES
    results = []
    for kind in ("classic", "quorum"):
        master, replica = _replica(ctx, kind, {"queue_type": kind})
        queue = replica.env["IT_CQRS_QUEUE"]
        _declare_by_consumer(ctx, replica, [queue])
        db_execute(ctx, replica.db, f"TRUNCATE {PRODUCT.table}")
        log(f"scale queue type: {kind}: publishing {n} messages with confirms (produce_many)")
        stdin = json.dumps(_rows(n + 100))
        import subprocess

        done = subprocess.run(
            [master.peer.python, "manage.py", "shell", "-c", _PUBLISH],
            cwd=master.dir,
            env=master.env,
            input=stdin,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"publishing failed:\n{done.stderr[-3000:]}")
        published = json.loads(done.stdout.strip().splitlines()[-1])
        _wait_backlog(ctx, [queue], n + 100)
        log(f"scale queue type: {kind}: applying with one cqrs_consume process")
        outcome = _apply(ctx, replica, 1, n + 100, f"type_{kind}")
        rate = published["count"] / published["seconds"]
        results.append(
            Result(
                "scale",
                f"{kind} queue: publish with confirms, s/1000 msgs",
                1000 / rate,
                None,
                f"{published['count']} in {published['seconds']:.2f}s = {rate:.0f} msg/s (produce_many, 1000 per call)",
            )
        )
        results.append(
            Result(
                "scale",
                f"{kind} queue: apply creates, 1 process, s/1000 msgs",
                1000 / outcome["rate"] if outcome["rate"] else None,
                None,
                _note(outcome, n + 100),
            )
        )
    return results
