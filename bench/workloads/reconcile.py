"""Group ``reconcile``: bulk dump + load, the PostgreSQL COPY baseline, and the diff pipeline.

Every workload runs on the integration services' ``Product`` model (``it_product``: integer
key, text with non-ASCII characters, decimal, datetime, date, UUID, boolean, nullable FK), each
peer on its own master and replica databases seeded with the same rows.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import random
import time
import uuid
from pathlib import Path
from typing import Any

from framework import Context, Peer, Result, Service, best_of, log, timed_shell, workload

CQRS_ID = "it_product"
MASTER_TABLE = "catalog_product"
REPLICA_TABLE = "catalog_productref"
MASTER_COLUMNS = (
    "id", "name", "description", "price", "created_at", "release_date", "external_id", "active",
    "category_id", "cqrs_revision", "cqrs_updated",
)
REPLICA_COLUMNS = (
    "id", "name", "description", "price", "created_at", "release_date", "external_id", "active",
    "category", "cqrs_revision", "cqrs_updated",
)
#: Repetitions (the fastest run counts; the machine is shared). django-cqrs's load runs once.
DUMP_RUNS, LOAD_RUNS, DIFF_RUNS = 2, 2, 3
WORDS = ["Kaffee ☕", "Grüße", "naïve", "日本", "plain", "text/with/slashes", "\"quoted\"", "tab\there"]


def master_csv(rows: int) -> str:
    """The same ``rows`` master rows for every peer (deterministic), in shuffled key order.

    Rows are written in random key order (as a table that lived a while is laid out), with a
    ~300-character description, so that 100,000 rows make a table larger than a quarter of
    PostgreSQL's default shared_buffers (where synchronized sequential scans start).
    """
    rnd = random.Random(4)
    base = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    out = io.StringIO()
    writer = csv.writer(out)
    keys = list(range(1, rows + 1))
    rnd.shuffle(keys)
    for pk in keys:
        writer.writerow(
            [
                pk,
                f"{rnd.choice(WORDS)} product {pk}",
                " ".join(rnd.choice(WORDS) for _ in range(36)),
                f"{rnd.randint(0, 10**8)}.{rnd.randint(0, 999999):06d}",
                (base + datetime.timedelta(seconds=pk * 7, microseconds=pk % 1000000)).isoformat(),
                (base.date() + datetime.timedelta(days=pk % 3000)).isoformat(),
                str(uuid.UUID(int=rnd.getrandbits(128))),
                "t" if pk % 3 else "f",
                "",
                pk % 5,
                (base + datetime.timedelta(seconds=pk)).isoformat(),
            ]
        )
    return out.getvalue()


def copy_in(ctx: Context, db: str, table: str, columns: tuple[str, ...], data: str) -> float:
    """``COPY table FROM STDIN`` (CSV) through psycopg2; return the seconds of connect+COPY+commit."""
    start = time.perf_counter()
    conn = ctx.connect(db)
    try:
        with conn.cursor() as cur:
            cur.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)", io.StringIO(data))
        conn.commit()
    finally:
        conn.close()
    return time.perf_counter() - start


def copy_out(ctx: Context, db: str, table: str, columns: tuple[str, ...]) -> str:
    conn = ctx.connect(db)
    try:
        buf = io.StringIO()
        with conn.cursor() as cur:
            cur.copy_expert(f"COPY (SELECT {', '.join(columns)} FROM {table} ORDER BY id) TO STDOUT WITH (FORMAT csv)", buf)
        return buf.getvalue()
    finally:
        conn.close()


def scalar(ctx: Context, db: str, sql: str, params: Any = None) -> Any:
    conn = ctx.connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchone()[0]
    finally:
        conn.close()


def execute(ctx: Context, db: str, sql: str, params: Any = None) -> None:
    conn = ctx.connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
        conn.commit()
    finally:
        conn.close()


def dump_stats(path: Path, rows: int) -> dict[str, int]:
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    ids = [json.loads(line)["id"] for line in lines if line.strip()]
    distinct = set(ids)
    return {
        "lines": len(ids),
        "distinct": len(distinct),
        "duplicates": len(ids) - len(distinct),
        "missing": len(set(range(1, rows + 1)) - distinct),
    }


def run_checked(seconds_and_result: tuple[float, Any], what: str) -> float:
    seconds, result = seconds_and_result
    if result.returncode != 0:
        raise RuntimeError(f"{what} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return seconds


def _by_peer(ctx: Context) -> dict[str, Peer]:
    return {p.name: p for p in ctx.peers}


# -- dump + load ---------------------------------------------------------------------------------


@workload("reconcile", "dump-load")
def dump_load(ctx: Context) -> list[Result]:
    seed = master_csv(ctx.rows)
    timings: dict[str, dict[str, float]] = {}
    notes: dict[str, str] = {}
    dumps: dict[str, Path] = {}
    replicas: dict[str, Service] = {}
    for peer in ctx.peers:
        master, replica = ctx.services(peer, "dl")
        replicas[peer.name] = replica
        copy_in(ctx, master.db, MASTER_TABLE, MASTER_COLUMNS, seed)
        execute(ctx, master.db, "ANALYZE")
        path = ctx.workdir / f"{peer.name}.dump"
        log(f"{peer.name}: cqrs_bulk_dump of {ctx.rows} rows")
        seconds = best_of(
            DUMP_RUNS,
            lambda master=master, path=path, peer=peer: run_checked(
                timed_shell(master.command("cqrs_bulk_dump", "-c", CQRS_ID, "-o", str(path), "-f"), master.env),
                f"{peer.name} cqrs_bulk_dump",
            ),
        )
        stats = dump_stats(path, ctx.rows)
        timings[peer.name] = {"dump": seconds}
        dumps[peer.name] = path
        notes[peer.name] = (
            f"{peer.name}: {stats['lines']} lines, {stats['distinct']} distinct rows,"
            f" {stats['duplicates']} duplicated, {stats['missing']} missing"
        )
    # Both peers load the same file, one with every row exactly once (ours when it ran).
    reference = dumps.get("ours") or next(iter(dumps.values()))
    loaded: dict[str, int] = {}
    for peer in ctx.peers:
        replica = replicas[peer.name]
        log(f"{peer.name}: cqrs_bulk_load of {reference.name}")

        def load_once(replica: Service = replica, peer: Peer = peer) -> float:
            execute(ctx, replica.db, f"TRUNCATE {REPLICA_TABLE}")
            return run_checked(
                timed_shell(replica.command("cqrs_bulk_load", "-i", str(reference)), replica.env),
                f"{peer.name} cqrs_bulk_load",
            )

        # django-cqrs needs minutes for one load: it runs once, ours takes the best of LOAD_RUNS
        timings[peer.name]["load"] = best_of(LOAD_RUNS if peer.name == "ours" else 1, load_once)
        loaded[peer.name] = scalar(ctx, replica.db, f"SELECT count(*) FROM {REPLICA_TABLE}")
    # COPY baseline: the same rows, already in COPY's CSV format, into an empty replica table.
    baseline_peer = replicas.get("ours") or next(iter(replicas.values()))
    rows_csv = copy_out(ctx, baseline_peer.db, REPLICA_TABLE, REPLICA_COLUMNS)
    copy_db = Service(ctx, baseline_peer.peer, "replica", ctx.create_database("copy"), "x", "x")
    copy_db.manage("migrate", "-v", "0")
    log("COPY baseline")
    copy_seconds = min(_copy_once(ctx, copy_db.db, rows_csv) for _ in range(3))

    ours, theirs = timings.get("ours", {}), timings.get("theirs", {})
    load_note = ", ".join(f"{name}: {count} rows in replica" for name, count in loaded.items())
    results = [
        Result("reconcile", f"cqrs_bulk_dump {ctx.rows} rows", ours.get("dump"), theirs.get("dump"), "; ".join(notes.values())),
        Result("reconcile", f"cqrs_bulk_load {ctx.rows} rows", ours.get("load"), theirs.get("load"), load_note),
        Result(
            "reconcile",
            "dump + load",
            ours["dump"] + ours["load"] if ours else None,
            theirs["dump"] + theirs["load"] if theirs else None,
        ),
    ]
    copy_note = "psycopg2 COPY FROM STDIN (CSV), connect+copy+commit, best of 3"
    if ours.get("load"):
        copy_note += f"; ours load = {ours['load'] / copy_seconds:.1f}x COPY (whole process incl. Django start)"
    results.append(Result("reconcile", f"COPY baseline {ctx.rows} rows", copy_seconds, None, copy_note))
    return results


def _copy_once(ctx: Context, db: str, rows_csv: str) -> float:
    execute(ctx, db, f"TRUNCATE {REPLICA_TABLE}")
    return copy_in(ctx, db, REPLICA_TABLE, REPLICA_COLUMNS, rows_csv)


# -- diff pipeline ---------------------------------------------------------------------------------


def make_drift(ctx: Context, master: Service, replica: Service) -> set[int]:
    """1 % of the rows drift: a third changed on the master without an event, a third deleted
    from the replica, a third changed on the replica behind its back. Returns their keys."""
    rnd = random.Random(7)
    count = max(3, ctx.rows // 100)
    keys = rnd.sample(range(1, ctx.rows + 1), count)
    third = count // 3
    changed, deleted, tampered = keys[:third], keys[third : 2 * third], keys[2 * third :]
    execute(ctx, master.db, f"UPDATE {MASTER_TABLE} SET name = name || ' v2', cqrs_revision = cqrs_revision + 1 WHERE id = ANY(%s)", [changed])
    execute(ctx, replica.db, f"DELETE FROM {REPLICA_TABLE} WHERE id = ANY(%s)", [deleted])
    execute(ctx, replica.db, f"UPDATE {REPLICA_TABLE} SET cqrs_revision = cqrs_revision + 5 WHERE id = ANY(%s)", [tampered])
    return set(keys)


def compiled_env(ctx: Context, env: dict[str, str]) -> dict[str, str]:
    """``env`` with Python's bytecode cache on, for both peers alike, in the work directory.

    A deployed service runs from compiled modules; with ``PYTHONDONTWRITEBYTECODE`` set (as some
    shells here have it) every process of the pipeline would compile the sources it imports that
    have no ``.pyc`` yet (an editable install, the services' code), about 0.1 s of CPU per process.
    The first of the best-of-N runs of each peer fills the cache."""
    compiled = {**env, "PYTHONPYCACHEPREFIX": str(ctx.workdir / "pycache")}
    compiled.pop("PYTHONDONTWRITEBYTECODE", None)
    return compiled


def queue_depth(ctx: Context, queue: str) -> int:
    with ctx.amqp_channel() as channel:
        return int(channel.queue_declare(queue, passive=True).method.message_count)


@workload("reconcile", "diff")
def diff_pipeline(ctx: Context) -> list[Result]:
    seed = master_csv(ctx.rows)
    times: dict[str, float] = {}
    detect_times: dict[str, float] = {}
    notes: list[str] = []
    for peer in ctx.peers:
        master, replica = ctx.services(peer, "diff")
        copy_in(ctx, master.db, MASTER_TABLE, MASTER_COLUMNS, seed)
        copy_in(ctx, replica.db, REPLICA_TABLE, REPLICA_COLUMNS, seed)
        expected = make_drift(ctx, master, replica)
        for service in (master, replica):
            execute(ctx, service.db, "ANALYZE")
        exchange, queue = master.env["IT_CQRS_EXCHANGE"], master.env["IT_CQRS_QUEUE"]
        with ctx.amqp_channel() as channel:  # the replica's queue, as cqrs_consume declares it
            channel.exchange_declare(exchange=exchange, exchange_type="topic", durable=True)
            channel.queue_declare(queue, durable=True)
            for key in (CQRS_ID, f"cqrs.{queue}.{CQRS_ID}"):
                channel.queue_bind(queue, exchange, routing_key=key)
        out = ctx.workdir / f"{peer.name}.diff"
        pipe = (
            f"{master.command('cqrs_diff_master', '--cqrs-id', CQRS_ID)}"
            f" | {replica.command('cqrs_diff_replica')}"
            f" | tee {out}"
            f" | {master.command('cqrs_diff_sync')}"
        )
        env = compiled_env(ctx, master.env)
        log(f"{peer.name}: diff pipeline on {ctx.rows} rows, {len(expected)} drifted")
        detect = f"{master.command('cqrs_diff_master', '--cqrs-id', CQRS_ID)} | {replica.command('cqrs_diff_replica')}"
        detect_times[peer.name] = best_of(
            DIFF_RUNS,
            lambda detect=detect, env=env, peer=peer: run_checked(
                timed_shell(f"{detect} > /dev/null", env), f"{peer.name} cqrs_diff_master | cqrs_diff_replica"
            ),
        )
        runs: list[tuple[float, Any]] = []
        for _ in range(DIFF_RUNS):  # nothing consumes the SYNCs, so the drift stays for every run
            with ctx.amqp_channel() as channel:
                channel.queue_purge(queue)
            runs.append(timed_shell(pipe, env))
        seconds, result = min(runs, key=lambda run: run[0])
        times[peer.name] = seconds
        found: set[int] = set()
        for line in out.read_text().splitlines()[1:]:
            if line.strip():
                found.update(json.loads(line))
        published = _settled_depth(ctx, queue)
        status = "ok" if result.returncode == 0 else f"exit {result.returncode}"
        notes.append(
            f"{peer.name}: {len(expected & found)}/{len(expected)} drifted rows found,"
            f" {len(expected - found)} missed, {len(found - expected)} extra, {published} SYNC published ({status})"
        )
    return [
        Result(
            "reconcile",
            f"diff detection {ctx.rows} rows",
            detect_times.get("ours"),
            detect_times.get("theirs"),
            "cqrs_diff_master | cqrs_diff_replica only (no publishing)",
        ),
        Result("reconcile", f"diff pipeline {ctx.rows} rows, 1% drift", times.get("ours"), times.get("theirs"), "; ".join(notes)),
    ]


def _settled_depth(ctx: Context, queue: str) -> int:
    depth, stable_since = -1, time.monotonic()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        current = queue_depth(ctx, queue)
        if current != depth:
            depth, stable_since = current, time.monotonic()
        elif time.monotonic() - stable_since > 1:
            break
        time.sleep(0.2)
    return depth
