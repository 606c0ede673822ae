"""Group ``replica``: what the consumer (``manage.py cqrs_consume``) does with a backlog, how close
it gets to the raw broker and database, the master-to-replica latency, and its memory.

* ``apply``: 20,000 SAVE messages of the realistic model (creates, then updates of existing rows)
  pre-published into the replica queue, applied by ``cqrs_consume -w 1`` and ``-w 2``; timed from
  starting the command until the replica table holds the final state. Both peers' services run
  with ``CONN_MAX_AGE = None`` (persistent database connections, what a long-lived consumer
  service has); django-cqrs is also measured with ``CONN_MAX_AGE = 0`` (Django's default, one
  connection per message there), labelled so. A secondary figure applies the small model;
* ``raw``: the limits of the same machine for the same realistic messages and rows: a bare pika
  consumer (prefetch 1000, ``json.loads`` of each body, one ``basic_ack(multiple=True)`` per 500)
  and a bare psycopg2 batched upsert (500 rows per ``INSERT ... ON CONFLICT``, one commit per
  batch), and each peer's share of the lower of the two;
* ``latency``: master commit to row visible on the replica, under a light load (20 saves/s);
* ``rss``: peak memory of the consumer process tree with 1,000,000 messages queued (the small
  model, so that the broker holds the backlog in memory on this machine).

The realistic model is the services' ``it_product`` (``ProductRef`` on the replica, table
``catalog_productref``): an integer key, a 100-character name with non-ASCII characters, a
300-character description, a decimal (6 places, sent as an exact JSON number), an aware datetime,
a boolean and a nullable foreign key (``category``, null for one row in four); its two other
nullable columns (a date and a UUID) are sent as null. About 700 bytes on the wire. The small
model is ``it_gadget`` (``GadgetRef``: integer key, a name, an integer; about 260 bytes). The
latency probe saves the services' master ``Product``, which both peers publish the ordinary way.

Environment: ``BENCH_REPLICA_MESSAGES`` (default 20000), ``BENCH_REPLICA_THEIRS_MESSAGES``
(django-cqrs's backlog, default 5000), ``BENCH_REPLICA_TIMEOUT`` (seconds one apply may take,
default 600), ``BENCH_REPLICA_SMALL=0`` (skip the small-model figure),
``BENCH_REPLICA_CONN0=0`` (skip django-cqrs with ``CONN_MAX_AGE = 0``), ``BENCH_REPLICA_RSS=0``
(skip the 1,000,000-message memory run), ``BENCH_REPLICA_RSS_MESSAGES`` (default 1000000),
``BENCH_REPLICA_LATENCY_SAVES`` (default 200).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import os
import select
import signal
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from framework import AMQP, Context, Peer, Result, Service, log, workload

MESSAGES = int(os.environ.get("BENCH_REPLICA_MESSAGES", "20000"))
#: django-cqrs applies a few hundred messages/s here: it gets a smaller backlog so that the group
#: stays within a few minutes.
THEIRS_MESSAGES = int(os.environ.get("BENCH_REPLICA_THEIRS_MESSAGES", "5000"))
APPLY_TIMEOUT = float(os.environ.get("BENCH_REPLICA_TIMEOUT", "600"))
SMALL_ENABLED = os.environ.get("BENCH_REPLICA_SMALL", "1") != "0"
CONN0_ENABLED = os.environ.get("BENCH_REPLICA_CONN0", "1") != "0"
RSS_ENABLED = os.environ.get("BENCH_REPLICA_RSS", "1") != "0"
RSS_MESSAGES = int(os.environ.get("BENCH_REPLICA_RSS_MESSAGES", "1000000"))
RSS_SECONDS = {"ours": 25.0, "theirs": 20.0}
LATENCY_SAVES = int(os.environ.get("BENCH_REPLICA_LATENCY_SAVES", "200"))
LATENCY_RATE = 20.0  # saves per second
LATENCY_WARMUP = 10  # saves before the measured ones (connections, caches)
WORKERS = (1, 2)
#: The services' database connections (``IT_CONN_MAX_AGE``): persistent for the main figures.
CONN_PERSISTENT = "none"

UPDATED = {0: "2026-11-22 10:00:00.123456+00:00", 1: "2026-11-22 10:05:00.654321+00:00"}
POLL = 0.05  # seconds between two looks at the replica table
RAW_BATCH = 500

#: Figures other workloads of the group reuse, per run: (run id, peer, kind, workers) → msg/s.
_RATES: dict[tuple[str, str, str, int], float] = {}
_SERVICES: dict[tuple[str, str], tuple[Service, Service]] = {}


# -- messages --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Model:
    """A replicated model of the services: its ``cqrs_id``, replica table, columns in wire order
    (``cqrs_revision`` and ``cqrs_updated`` last) and the values of row ``pk`` at ``revision``."""

    label: str
    cqrs_id: str
    table: str
    columns: tuple[str, ...]
    values: Callable[[int, int], tuple[Any, ...]]
    #: Columns whose value is written as raw JSON number text (exact decimals, as masters send them).
    numbers: frozenset[str] = frozenset()

    def body(self, pk: int, revision: int) -> bytes:
        """A SAVE as a master sends it (docs/wire-format.md): keys in wire order, compact JSON,
        ``instance_data`` with the model's fields, ``cqrs_revision`` and ``cqrs_updated``."""
        data = dict(zip(self.columns, self.values(pk, revision), strict=True))
        numbers = {}
        for column in self.numbers:
            if data[column] is not None:
                numbers[column] = data[column]
                data[column] = f"@{column}@"
        text = json.dumps(
            {
                "signal_type": "SAVE",
                "cqrs_id": self.cqrs_id,
                "instance_data": data,
                "previous_data": None,
                "instance_pk": pk,
                "correlation_id": None,
                "retries": 0,
                "expires": None,
                "meta": None,
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )
        for column, value in numbers.items():
            text = text.replace(f'"@{column}@"', value, 1)
        return text.encode()


def gadget_values(pk: int, revision: int) -> tuple[Any, ...]:
    suffix = "" if revision == 0 else f" v{revision + 1}"
    return (pk, f"gadget {pk}{suffix}", (pk + revision) % 100, revision, UPDATED[revision])


_WORDS = (
    "Schraubendreher aus gehärtetem Stahl, ergonomischer Griff, für Schlitz- und Kreuzschrauben;"
    " livré avec étui, garantie 2 ans. Zestaw zawiera końcówki wymienne i uchwyt magnetyczny."
    " Suitable for workshops and households alike, tested to DIN ISO 2380 and 8764. "
)


def product_values(pk: int, revision: int) -> tuple[Any, ...]:
    """``it_product`` row ``pk``: a 100-character name, a 300-character description, a decimal
    (text, 6 places), an aware datetime, no date nor UUID, a boolean, a nullable category id."""
    suffix = "" if revision == 0 else f" v{revision + 1}"
    name = f"Präzisions-Schraubendreher №{pk}{suffix} – Größe {pk % 12} "
    name = (name + "-" * 100)[:100]
    offset = pk % 50
    description = f"Artikel {pk}{suffix}: " + (_WORDS * 3)[offset : offset + 300]
    description = description[:300]
    price = f"{(pk * 37 + revision) % 100000}.{(pk * 7919) % 1000000:06d}"
    created = f"2026-11-{1 + pk % 28:02d} {pk % 24:02d}:{pk % 60:02d}:{(pk * 7) % 60:02d}.{(pk * 13) % 1000000:06d}+00:00"
    category = None if pk % 4 == 0 else 1 + pk % 50
    return (
        pk,
        name,
        description,
        price,
        created,
        None,
        None,
        pk % 3 != 0,
        category,
        revision,
        UPDATED[revision],
    )


PRODUCT = Model(
    "realistic",
    "it_product",
    "catalog_productref",
    (
        "id",
        "name",
        "description",
        "price",
        "created_at",
        "release_date",
        "external_id",
        "active",
        "category",
        "cqrs_revision",
        "cqrs_updated",
    ),
    product_values,
    frozenset({"price"}),
)
GADGET = Model(
    "small",
    "it_gadget",
    "catalog_gadgetref",
    ("id", "name", "qty", "cqrs_revision", "cqrs_updated"),
    gadget_values,
)


def declare(channel: Any, exchange: str, queue: str, model: Model) -> None:
    """The replica queue and the bindings of ``model``, as ``cqrs_consume`` declares them."""
    channel.exchange_declare(exchange=exchange, exchange_type="topic", durable=True)
    channel.queue_declare(queue, durable=True)
    for key in (model.cqrs_id, f"cqrs.{queue}.{model.cqrs_id}"):
        channel.queue_bind(queue, exchange, routing_key=key)


def publish(
    ctx: Context, model: Model, exchange: str, first: int, count: int, revision: int
) -> None:
    """Publish ``count`` SAVEs (keys ``first``...) without confirms; persistent, as masters do."""
    import pika

    props = pika.BasicProperties(content_type="text/plain", delivery_mode=2)
    with ctx.amqp_channel() as channel:
        for pk in range(first, first + count):
            channel.basic_publish(exchange, model.cqrs_id, model.body(pk, revision), props)


def _publish_range(exchange: str, first: int, count: int) -> None:  # a publishing process
    """The backlog of the memory run (small model): transient messages (delivery mode 1), which
    the broker takes about twice as fast as persistent ones here; the consumer handles both the
    same way."""
    import pika

    conn = pika.BlockingConnection(pika.ConnectionParameters(*AMQP))
    try:
        channel = conn.channel()
        props = pika.BasicProperties(content_type="text/plain", delivery_mode=1)
        for pk in range(first, first + count):
            channel.basic_publish(exchange, GADGET.cqrs_id, GADGET.body(pk, 0), props)
    finally:
        conn.close()


def depth(ctx: Context, queue: str) -> tuple[int, int]:
    """(messages ready, consumers) of a queue."""
    with ctx.amqp_channel() as channel:
        method = channel.queue_declare(queue, passive=True).method
        return int(method.message_count), int(method.consumer_count)


def wait_depth(ctx: Context, queues: list[str], count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        current = [depth(ctx, q)[0] for q in queues]
        if min(current) >= count:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"queues {queues} hold {current} messages, expected {count}")
        time.sleep(0.2)


# -- processes and the database -------------------------------------------------------------------


class Consumer:
    """``manage.py cqrs_consume -w N`` of a replica service, in its own session (process group)."""

    def __init__(
        self,
        ctx: Context,
        service: Service,
        workers: int,
        label: str,
        conn_max_age: str = CONN_PERSISTENT,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.log_path = ctx.workdir / f"consume_{label}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [service.peer.python, "manage.py", "cqrs_consume", "-w", str(workers), *extra_args],
            cwd=service.dir,
            env={**service.env, "IT_CONN_MAX_AGE": conn_max_age},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"cqrs_consume exited {self.proc.returncode}:\n{self.tail()}")

    def tail(self) -> str:
        return Path(self.log_path).read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # workers may outlive their supervisor: nothing of the session survives the benchmark
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()


def session_rss(sid: int) -> tuple[int, int, int]:
    """(sum of VmRSS in kB, largest VmRSS in kB, processes) over the processes of session ``sid``."""
    total = largest = count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[3]) != sid:  # state ppid pgrp session ...
                continue
            with open(f"/proc/{entry}/status") as f:
                rss = next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
        except (OSError, ValueError):
            continue
        total += rss
        largest = max(largest, rss)
        count += 1
    return total, largest, count


def db_execute(ctx: Context, db: str, sql: str, params: Any = None) -> None:
    conn = ctx.connect(db)
    conn.autocommit = True  # VACUUM runs outside a transaction block
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
    finally:
        conn.close()


def services(ctx: Context, peer: Peer) -> tuple[Service, Service]:
    """A migrated master and replica of ``peer`` for this group (created once per run)."""
    key = (ctx.run_id, peer.name)
    if key not in _SERVICES:
        _SERVICES[key] = ctx.services(peer, "rep")
    return _SERVICES[key]


def queue_of(service: Service) -> tuple[str, str]:
    return service.env["IT_CQRS_EXCHANGE"], service.env["IT_CQRS_QUEUE"]


def reset(ctx: Context, replica: Service, model: Model, rows_at_revision_0: int) -> None:
    """Empty replica queue and table; optionally ``rows_at_revision_0`` rows already replicated."""
    exchange, queue = queue_of(replica)
    with ctx.amqp_channel() as channel:
        declare(channel, exchange, queue, model)
        channel.queue_purge(queue)
    db_execute(ctx, replica.db, f"TRUNCATE {model.table}")
    if rows_at_revision_0:
        insert_rows(ctx, replica.db, model, 0, rows_at_revision_0)
    db_execute(ctx, replica.db, f"VACUUM ANALYZE {model.table}")


def insert_rows(ctx: Context, db: str, model: Model, revision: int, count: int) -> None:
    """Rows 1..count of ``model`` at ``revision``, as if replicated already."""
    from psycopg2.extras import execute_values

    conn = ctx.connect(db)
    try:
        with conn.cursor() as cur:
            execute_values(
                cur,
                f"INSERT INTO {model.table} ({', '.join(model.columns)}) VALUES %s",
                [model.values(pk, revision) for pk in range(1, count + 1)],
                page_size=RAW_BATCH,
            )
        conn.commit()
    finally:
        conn.close()


# -- apply -----------------------------------------------------------------------------------------


def apply_once(
    ctx: Context,
    replica: Service,
    model: Model,
    kind: str,
    workers: int,
    n: int,
    conn_max_age: str = CONN_PERSISTENT,
    extra_args: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Pre-publish ``n`` creates or updates of ``model``, run ``cqrs_consume -w workers`` until
    the table holds them all; return seconds, seconds to the first applied row, and what was found."""
    updates = kind == "updates"
    table = model.table
    reset(ctx, replica, model, n if updates else 0)
    exchange, queue = queue_of(replica)
    publish(ctx, model, exchange, 1, n, 1 if updates else 0)
    wait_depth(ctx, [queue], n, 120)
    check = (
        f"SELECT count(*) FILTER (WHERE cqrs_revision = 1) FROM {table}"
        if updates
        else f"SELECT count(*) FROM {table}"
    )
    conn = ctx.connect(replica.db)
    conn.autocommit = True
    done = first = None
    seen = 0
    start = time.perf_counter()
    label = f"{replica.peer.name}_{model.label}_{kind}_w{workers}_age{conn_max_age}"
    if extra_args:
        label += "_" + "_".join(a.strip("-") for a in extra_args)
    consumer = Consumer(ctx, replica, workers, label, conn_max_age, extra_args)
    try:
        with conn.cursor() as cur:
            while time.perf_counter() - start < APPLY_TIMEOUT:
                cur.execute(check)
                seen = cur.fetchone()[0]
                now = time.perf_counter()
                if seen and first is None:
                    first = now - start
                if seen >= n:
                    done = now - start
                    break
                consumer.check_alive()
                time.sleep(POLL)
            cur.execute(f"SELECT count(*), min(cqrs_revision), max(cqrs_revision) FROM {table}")
            rows, low, high = cur.fetchone()
    finally:
        consumer.stop()
        conn.close()
    left = depth(ctx, queue)[0]
    if done is None:
        log(
            f"{replica.peer.name} {kind} -w {workers}: only {seen}/{n} after {APPLY_TIMEOUT:.0f}s\n{consumer.tail()}"
        )
    return {
        "n": n,
        "seconds": done,
        "first": first,
        "rate": n / done if done else None,
        "steady": (n - 1) / (done - first) if done and first is not None and done > first else None,
        "rows": rows,
        "revisions": (low, high),
        "left": left,
        "seen": seen,
        "kind": kind,
    }


def messages_for(peer: Peer) -> int:
    return min(MESSAGES, THEIRS_MESSAGES) if peer.name == "theirs" else MESSAGES


def rate_note(name: str, outcome: dict[str, Any]) -> str:
    n = outcome["n"]
    if outcome["seconds"] is None:
        return f"{name}: TIMEOUT, {outcome['seen']}/{n} applied in {APPLY_TIMEOUT:.0f}s"
    text = f"{name}: {n} in {outcome['seconds']:.1f}s = {outcome['rate']:.0f} msg/s"
    if outcome["steady"]:
        text += f" ({outcome['steady']:.0f}/s after the first row at {outcome['first']:.1f}s)"
    return text


def check_notes(outcomes: dict[str, dict[str, Any]]) -> list[str]:
    """What is wrong with the final table of each run (rows, revisions, messages left)."""
    notes = []
    for name, outcome in outcomes.items():
        low, high = outcome["revisions"]
        expected = (1, 1) if outcome["kind"] == "updates" else (0, 0)
        if outcome["rows"] != outcome["n"] or (low, high) != expected or outcome["left"]:
            notes.append(
                f"{name}: {outcome['rows']} rows, revisions {low}..{high}, {outcome['left']} left in queue"
            )
    return notes


def per_thousand(outcome: dict[str, Any] | None) -> float | None:
    return 1000 / outcome["rate"] if outcome and outcome["rate"] else None


def ratio_note(ours: dict[str, Any] | None, theirs: dict[str, Any] | None) -> list[str]:
    if ours and theirs and ours["rate"] and theirs["rate"]:
        return [f"ours/theirs {ours['rate'] / theirs['rate']:.1f}x"]
    return []


@workload("replica", "apply")
def apply_backlog(ctx: Context) -> list[Result]:
    results = []
    main: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    for kind in ("creates", "updates"):
        for workers in WORKERS:
            outcomes: dict[str, dict[str, Any]] = {}
            for peer in ctx.peers:
                _master, replica = services(ctx, peer)
                n = messages_for(peer)
                log(
                    f"replica apply: {peer.name}, {n} {kind} of {PRODUCT.cqrs_id}, cqrs_consume -w {workers}"
                )
                outcome = apply_once(ctx, replica, PRODUCT, kind, workers, n)
                outcomes[peer.name] = outcome
                if outcome["rate"]:
                    _RATES[(ctx.run_id, peer.name, kind, workers)] = outcome["rate"]
                if outcome["steady"]:
                    _RATES[(ctx.run_id, peer.name, f"{kind} steady", workers)] = outcome["steady"]
            main[(kind, workers)] = outcomes
            notes = ratio_note(outcomes.get("ours"), outcomes.get("theirs"))
            if workers > 1 and "ours" in outcomes and "ours" in main.get((kind, 1), {}):
                one, many = main[(kind, 1)]["ours"]["rate"], outcomes["ours"]["rate"]
                if one and many:
                    notes.append(f"ours -w {workers}/-w 1 {many / one:.2f}x")
            notes += [rate_note(name, outcome) for name, outcome in outcomes.items()]
            notes += check_notes(outcomes)
            results.append(
                Result(
                    "replica",
                    f"apply {kind}, realistic, -w {workers}, s/1000 msgs",
                    per_thousand(outcomes.get("ours")),
                    per_thousand(outcomes.get("theirs")),
                    "; ".join(notes),
                )
            )
    theirs = ctx.peer("theirs")
    if CONN0_ENABLED and theirs is not None:
        _master, replica = services(ctx, theirs)
        for kind in ("creates", "updates"):
            n = messages_for(theirs)
            log(f"replica apply: theirs, {n} {kind} of {PRODUCT.cqrs_id}, -w 1, CONN_MAX_AGE = 0")
            outcome = apply_once(ctx, replica, PRODUCT, kind, 1, n, conn_max_age="0")
            ours = main.get((kind, 1), {}).get("ours")
            notes = ratio_note(ours, outcome) + [
                "ours as above (CONN_MAX_AGE = None)",
                rate_note("theirs with CONN_MAX_AGE = 0", outcome),
                *check_notes({"theirs": outcome}),
            ]
            results.append(
                Result(
                    "replica",
                    f"apply {kind}, realistic, -w 1, theirs CONN_MAX_AGE=0",
                    per_thousand(ours),
                    per_thousand(outcome),
                    "; ".join(notes),
                )
            )
    if SMALL_ENABLED:
        outcomes = {}
        for peer in ctx.peers:
            _master, replica = services(ctx, peer)
            n = messages_for(peer)
            log(f"replica apply: {peer.name}, {n} creates of {GADGET.cqrs_id} (small), -w 1")
            outcomes[peer.name] = apply_once(ctx, replica, GADGET, "creates", 1, n)
        notes = ratio_note(outcomes.get("ours"), outcomes.get("theirs"))
        notes += [rate_note(name, outcome) for name, outcome in outcomes.items()] + check_notes(
            outcomes
        )
        results.append(
            Result(
                "replica",
                "apply creates, small (it_gadget), -w 1, s/1000 msgs",
                per_thousand(outcomes.get("ours")),
                per_thousand(outcomes.get("theirs")),
                "; ".join(notes),
            )
        )
    return results


# -- raw limits ------------------------------------------------------------------------------------


def raw_consume(ctx: Context, exchange: str, queue: str) -> float:
    """Seconds for a bare pika consumer to take MESSAGES pre-published realistic messages:
    prefetch 1000, each body JSON-decoded, ``basic_ack(multiple=True)`` every 500 messages and
    after the last."""
    import pika

    with ctx.amqp_channel() as channel:
        declare(channel, exchange, queue, PRODUCT)
        channel.queue_purge(queue)
    publish(ctx, PRODUCT, exchange, 1, MESSAGES, 0)
    wait_depth(ctx, [queue], MESSAGES, 120)
    conn = pika.BlockingConnection(pika.ConnectionParameters(*AMQP))
    try:
        channel = conn.channel()
        start = time.perf_counter()
        channel.basic_qos(prefetch_count=1000)
        received = 0

        def on_message(ch: Any, method: Any, _props: Any, payload: bytes) -> None:
            nonlocal received
            json.loads(payload)
            received += 1
            if received % RAW_BATCH == 0 or received == MESSAGES:
                ch.basic_ack(method.delivery_tag, multiple=True)

        channel.basic_consume(queue, on_message)
        deadline = time.monotonic() + 120
        while received < MESSAGES and time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.1)
        seconds = time.perf_counter() - start
    finally:
        with contextlib.suppress(Exception):
            conn.close()
    if received < MESSAGES:
        raise RuntimeError(f"raw consume got {received}/{MESSAGES} messages")
    return seconds


def raw_upsert(ctx: Context, db: str, revision: int) -> float:
    """Seconds for psycopg2 to upsert MESSAGES realistic rows at ``revision`` into the replica
    table, 500 per ``INSERT ... ON CONFLICT (id) DO UPDATE ... WHERE revision <``, one commit per
    batch (the values as text, as they arrive on the wire)."""
    from psycopg2.extras import execute_values

    rows = [PRODUCT.values(pk, revision) for pk in range(1, MESSAGES + 1)]
    columns = PRODUCT.columns
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c != "id")
    sql = (
        f"INSERT INTO {PRODUCT.table} AS t ({', '.join(columns)}) VALUES %s"
        f" ON CONFLICT (id) DO UPDATE SET {updates}"
        " WHERE t.cqrs_revision < EXCLUDED.cqrs_revision"
    )
    conn = ctx.connect(db)
    try:
        start = time.perf_counter()
        with conn.cursor() as cur:
            for i in range(0, len(rows), RAW_BATCH):
                execute_values(cur, sql, rows[i : i + RAW_BATCH], page_size=RAW_BATCH)
                conn.commit()
        return time.perf_counter() - start
    finally:
        conn.close()


@workload("replica", "raw")
def raw_limits(ctx: Context) -> list[Result]:
    n = MESSAGES
    _master, replica = services(ctx, ctx.peers[0])
    exchange, queue = ctx.exchange_and_queue("raw")
    table = PRODUCT.table
    log(
        f"replica raw limits: pika consume and psycopg2 upsert of {n} realistic messages/rows (best of 2)"
    )
    consume = min(raw_consume(ctx, exchange, queue) for _ in range(2))
    inserts, updates = [], []
    for _ in range(2):
        db_execute(ctx, replica.db, f"TRUNCATE {table}")
        inserts.append(raw_upsert(ctx, replica.db, 0))
        updates.append(raw_upsert(ctx, replica.db, 1))
    db_execute(ctx, replica.db, f"TRUNCATE {table}")
    with ctx.amqp_channel() as channel:
        channel.queue_delete(queue)
    insert, update = min(inserts), min(updates)
    size = len(PRODUCT.body(n // 2, 0))
    results = [
        Result(
            "replica",
            f"raw pika consume {n} msgs",
            consume,
            None,
            f"{n / consume:.0f} msg/s: realistic bodies (~{size} bytes), prefetch 1000, json.loads,"
            f" basic_ack(multiple) every {RAW_BATCH}; best of 2",
        ),
        Result(
            "replica",
            f"raw upsert {n} new rows",
            insert,
            None,
            f"{n / insert:.0f} rows/s: realistic rows, execute_values INSERT .. ON CONFLICT, {RAW_BATCH}/batch,"
            " commit per batch; best of 2",
        ),
        Result(
            "replica",
            f"raw upsert {n} updated rows",
            update,
            None,
            f"{n / update:.0f} rows/s: same, every row at a higher revision; best of 2",
        ),
    ]
    for kind, upsert in (("creates", insert), ("updates", update)):
        limit = min(n / consume, n / upsert)
        shares = []
        for peer in ctx.peers:
            rate = _RATES.get((ctx.run_id, peer.name, kind, 1))
            steady = _RATES.get((ctx.run_id, peer.name, f"{kind} steady", 1))
            if rate:
                text = f"{peer.name} {100 * rate / limit:.1f}% ({rate:.0f} msg/s"
                shares.append(
                    text
                    + (f"; {100 * steady / limit:.1f}% after the first row)" if steady else ")")
                )
        results.append(
            Result(
                "replica",
                f"share of raw limit, {kind} -w 1",
                None,
                None,
                f"raw limit {limit:.0f}/s = min(consume, upsert); "
                + (", ".join(shares) or "apply not run"),
            )
        )
    return results


# -- latency ---------------------------------------------------------------------------------------

#: Run by ``manage.py shell -c`` on the master: saves ``Product`` rows at a steady rate and prints
#: {pk: wall time right after COMMIT} (an on_commit hook registered before the save runs first).
PROBE = """
import json, os, time
from django.db import transaction
from catalog.models import Product

n = int(os.environ["BENCH_LAT_N"])
warm = int(os.environ["BENCH_LAT_WARMUP"])
rate = float(os.environ["BENCH_LAT_RATE"])
commits = {}


def save(pk):
    with transaction.atomic():
        transaction.on_commit(lambda: commits.__setitem__(pk, time.time()))
        Product.objects.create(id=pk, name="latency %d" % pk, price=1)


for pk in range(1, warm + 1):
    save(pk)
    time.sleep(0.05)
start = time.monotonic()
for i in range(n):
    delay = start + i / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    save(warm + 1 + i)
try:
    from dj_cqrs.master.dispatcher import dispatcher
except ImportError:
    pass
else:
    dispatcher.drain(30)
print(json.dumps({pk: t for pk, t in commits.items() if pk > warm}))
"""

NOTIFY = """
CREATE OR REPLACE FUNCTION bench_visible() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('bench_visible', NEW.id::text); RETURN NULL; END $$;
DROP TRIGGER IF EXISTS bench_visible ON catalog_productref;
CREATE TRIGGER bench_visible AFTER INSERT OR UPDATE ON catalog_productref
FOR EACH ROW EXECUTE FUNCTION bench_visible();
"""


def latency_once(ctx: Context, master: Service, replica: Service) -> dict[str, Any]:
    """p50/p99 of master commit → replica row visible (a NOTIFY from a trigger on the replica
    table is delivered when the consumer's transaction commits; received by a LISTEN here)."""
    exchange, queue = queue_of(replica)
    with ctx.amqp_channel() as channel:
        declare(channel, exchange, queue, PRODUCT)
        channel.queue_purge(queue)
    db_execute(ctx, master.db, "TRUNCATE catalog_product CASCADE")
    db_execute(ctx, replica.db, "TRUNCATE catalog_productref")
    db_execute(ctx, replica.db, NOTIFY)
    listen = ctx.connect(replica.db)
    listen.autocommit = True
    listen.cursor().execute("LISTEN bench_visible")
    seen: dict[int, float] = {}
    consumer = Consumer(ctx, replica, 1, f"{replica.peer.name}_latency")
    probe = None
    try:
        deadline = time.monotonic() + 30
        while depth(ctx, queue)[1] < 1:
            consumer.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"cqrs_consume did not attach to {queue}:\n{consumer.tail()}")
            time.sleep(0.1)
        env = {
            **master.env,
            "BENCH_LAT_N": str(LATENCY_SAVES),
            "BENCH_LAT_WARMUP": str(LATENCY_WARMUP),
            "BENCH_LAT_RATE": str(LATENCY_RATE),
        }
        probe = subprocess.Popen(
            [master.peer.python, "manage.py", "shell", "-c", PROBE],
            cwd=master.dir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        expected = LATENCY_WARMUP + LATENCY_SAVES
        hard_stop = time.monotonic() + 60
        probe_done_at = None
        while time.monotonic() < hard_stop:
            if select.select([listen], [], [], 0.05)[0]:
                listen.poll()
                now = time.time()
                while listen.notifies:
                    pk = int(listen.notifies.pop(0).payload)
                    seen.setdefault(pk, now)
            if probe_done_at is None and probe.poll() is not None:
                probe_done_at = time.monotonic()
            if probe_done_at is not None and (
                len(seen) >= expected or time.monotonic() - probe_done_at > 5
            ):
                break
        try:
            out, err = probe.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            probe.kill()
            raise RuntimeError("latency probe did not finish in time") from None
        if probe.returncode != 0:
            raise RuntimeError(f"latency probe exited {probe.returncode}:\n{err[-3000:]}")
        commits = {int(k): v for k, v in json.loads(out.strip().splitlines()[-1]).items()}
    finally:
        if probe is not None and probe.poll() is None:
            probe.kill()
        consumer.stop()
        listen.close()
    lat = sorted(1000 * (seen[pk] - t) for pk, t in commits.items() if pk in seen)
    missing = len(commits) - len(lat)
    if not lat:
        return {"p50": None, "p99": None, "max": None, "missing": missing, "n": 0}
    return {
        "p50": statistics.median(lat),
        "p99": lat[min(len(lat) - 1, int(round(0.99 * len(lat))) - 1)],
        "max": lat[-1],
        "missing": missing,
        "n": len(lat),
    }


def p50_seconds(figures: dict[str, Any] | None) -> float | None:
    return figures["p50"] / 1000 if figures and figures["p50"] is not None else None


@workload("replica", "latency")
def latency(ctx: Context) -> list[Result]:
    figures: dict[str, dict[str, Any]] = {}
    for peer in ctx.peers:
        master, replica = services(ctx, peer)
        log(
            f"replica latency: {peer.name}, {LATENCY_SAVES} saves at {LATENCY_RATE:.0f}/s, cqrs_consume -w 1"
        )
        figures[peer.name] = latency_once(ctx, master, replica)

    def note(name: str, f: dict[str, Any]) -> str:
        if not f["n"]:
            return f"{name}: nothing seen ({f['missing']} missing)"
        text = f"{name} p50 {f['p50']:.1f} ms, p99 {f['p99']:.1f} ms, max {f['max']:.1f} ms"
        return text + (f", {f['missing']} never seen" if f["missing"] else "")

    return [
        Result(
            "replica",
            f"latency commit->visible, {LATENCY_SAVES} saves at {LATENCY_RATE:.0f}/s",
            p50_seconds(figures.get("ours")),
            p50_seconds(figures.get("theirs")),
            "; ".join(note(name, f) for name, f in figures.items()) + " (seconds columns: p50)",
        )
    ]


# -- memory with a deep queue ----------------------------------------------------------------------


def fill(ctx: Context, exchange: str, queue: str, target: int, first: int) -> tuple[int, float]:
    """Publish (two processes) until ``queue`` holds ``target`` messages, with keys from
    ``first``; return the next free key and the seconds it took."""
    start = time.perf_counter()
    missing = target - depth(ctx, queue)[0]
    if missing <= 0:
        return first, 0.0
    procs = 2
    chunk = -(-missing // procs)
    mp = multiprocessing.get_context("fork")
    publishers = [
        mp.Process(
            target=_publish_range,
            args=(exchange, first + k * chunk, min(chunk, missing - k * chunk)),
        )
        for k in range(procs)
    ]
    for p in publishers:
        p.start()
    for p in publishers:
        p.join(300)
        if p.exitcode != 0:
            raise RuntimeError(f"publisher process exited {p.exitcode}")
    wait_depth(ctx, [queue], target, 120)
    return first + missing, time.perf_counter() - start


@workload("replica", "rss")
def consumer_rss(ctx: Context) -> list[Result]:
    if not RSS_ENABLED:
        log("replica rss: skipped (BENCH_REPLICA_RSS=0)")
        return []
    # One queue for every peer (both declare it the same way): after a peer's run it is topped
    # up to RSS_MESSAGES again, which costs far less than publishing a full backlog per peer.
    exchange, queue = ctx.exchange_and_queue("rss")
    with ctx.amqp_channel() as channel:
        declare(channel, exchange, queue, GADGET)
        channel.queue_purge(queue)
    next_key = 1
    figures: dict[str, dict[str, float]] = {}
    try:
        for peer in ctx.peers:
            log(f"replica rss: filling the queue up to {RSS_MESSAGES} messages")
            next_key, published = fill(ctx, exchange, queue, RSS_MESSAGES, next_key)
            _master, base = services(ctx, peer)
            replica = Service(ctx, peer, "replica", base.db, exchange, queue)
            db_execute(ctx, replica.db, f"TRUNCATE {GADGET.table}")
            seconds = RSS_SECONDS.get(peer.name, 20.0)
            log(
                f"replica rss: {peer.name} cqrs_consume -w 1 for {seconds:.0f}s on"
                f" {RSS_MESSAGES} queued messages (published in {published:.0f}s)"
            )
            consumer = Consumer(ctx, replica, 1, f"{peer.name}_rss")
            peak = largest = 0
            procs_seen = 0
            try:
                until = time.monotonic() + seconds
                while time.monotonic() < until:
                    total, biggest, count = session_rss(consumer.proc.pid)
                    peak, largest, procs_seen = (
                        max(peak, total),
                        max(largest, biggest),
                        max(procs_seen, count),
                    )
                    consumer.check_alive()
                    time.sleep(0.5)
            finally:
                consumer.stop()
            conn = ctx.connect(replica.db)
            try:
                with conn.cursor() as cur:
                    cur.execute(f"SELECT count(*) FROM {GADGET.table}")
                    applied = cur.fetchone()[0]
            finally:
                conn.close()
            figures[peer.name] = {
                "peak": peak / 1024,
                "largest": largest / 1024,
                "procs": procs_seen,
                "applied": applied,
                "seconds": seconds,
                "published": published,
            }
    finally:
        with ctx.amqp_channel() as channel:
            for name in (queue, f"dead_letter_{queue}"):
                with contextlib.suppress(Exception):
                    channel.queue_delete(name)
        for peer in ctx.peers:
            with contextlib.suppress(Exception):
                db_execute(ctx, services(ctx, peer)[1].db, f"TRUNCATE {GADGET.table}")
    notes = [
        f"{name}: peak {f['peak']:.0f} MB over {f['procs']:.0f} processes"
        f" (largest {f['largest']:.0f} MB), {f['applied']:.0f} applied in {f['seconds']:.0f}s"
        for name, f in figures.items()
    ]
    publishing = ", ".join(f"{f['published']:.0f}s" for f in figures.values())
    return [
        Result(
            "replica",
            f"consumer peak RSS, {RSS_MESSAGES} queued, -w 1",
            None,
            None,
            "; ".join(notes)
            + f"; VmRSS summed over the process tree every 0.5s; publishing/top-up took {publishing}",
        )
    ]
