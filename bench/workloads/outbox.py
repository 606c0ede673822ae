"""Group ``outbox``: what publishing costs the master (issue 12), on the issue's realistic model.

The model (``bench/savebench/benchapp/models.py``): an integer, a 100-character name, a
300-character text, a decimal, an aware datetime, a boolean and a nullable FK (about 700-800 bytes
on the wire). ``bench/savebench/run_save.py`` runs in each peer's Python against its own fresh
database and measures, in one process, plain Django and the CQRS model side by side:

* single-row ``save()`` creating a row, updating a row, and ``delete()``, each in its own
  transaction (autocommit), kinds alternating, medians: the master model with
  ``CQRS_TRACKED_FIELDS`` off and with ``'__all__'``; ours also with ``CQRS_DB_TRIGGERS`` (an extra
  line). Persistent database connections, no request signals (in a script that is what
  ``CONN_MAX_AGE = None`` gives a long-lived service);
* ``Model.cqrs.bulk_create`` of 5,000 rows in batches of 500 against ``bulk_create``, and
  ``Model.cqrs.bulk_update`` of 5,000 rows against ``QuerySet.update``: medians of 3 rounds;
* ours only: a backlog of 50,000 outbox events drained by the relay, with publisher confirms;
* a labelled variant: plain and master saves inside simulated requests (``request_started`` /
  ``request_finished`` around each operation) with ``CONN_MAX_AGE = 0`` (every operation opens a
  database connection, as a service configured so does), for both peers.

Columns: seconds per 1000 operations (saves) or for the whole operation (bulk, relay); ``plain`` is
plain Django measured in our process. The notes give ours/plain, theirs/plain (against the plain
figure of its own process), ours/theirs, the rates, and each goal of the issue as met or NOT MET.
Every published message is counted in a sink queue; a mismatch is printed and put in the table.

Knobs: BENCH_SAVES (operations per kind, 1000), BENCH_REQUEST_SAVES (300; 0 skips the variant),
BENCH_REQUEST_CONN_MAX_AGE (``0``; comma-separated, ``none`` allowed), BENCH_BULK (5000),
BENCH_BULK_ROUNDS (3), BENCH_RELAY_EVENTS (50000; 0 skips). The group does not follow ``--rows``.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from framework import ROOT, Context, Peer, Result, log, workload

SCRIPT = ROOT / "bench" / "savebench" / "run_save.py"
SAVES = int(os.environ.get("BENCH_SAVES", "1000"))
REQUEST_SAVES = int(os.environ.get("BENCH_REQUEST_SAVES", "300"))
REQUEST_AGES = [
    a.strip() for a in os.environ.get("BENCH_REQUEST_CONN_MAX_AGE", "0").split(",") if a.strip()
]
BULK = int(os.environ.get("BENCH_BULK", "5000"))
BULK_ROUNDS = int(os.environ.get("BENCH_BULK_ROUNDS", "3"))
RELAY_EVENTS = int(os.environ.get("BENCH_RELAY_EVENTS", "50000"))
#: Operations per kind of the variant with outbox_publish = "relay" and a relay process (0: skip).
RELAY_MODE_SAVES = int(os.environ.get("BENCH_RELAY_MODE_SAVES", "1000"))

SAVE_GOAL = 1.25  # the goals
BULK_CREATE_GOAL = 2.0
BULK_UPDATE_GOAL = 3.0
RELAY_GOAL = 20_000.0
OPS = {"create": "save() create", "update": "save() update", "delete": "delete()"}


def run_peer(ctx: Context, peer: Peer, label: str, extra: dict[str, str]) -> dict[str, Any]:
    db = ctx.create_database(f"{peer.name}_{label}")
    exchange, _queue = ctx.exchange_and_queue(f"{peer.name}_{label}")
    env = {**os.environ, "BENCH_DB": db, "BENCH_EXCHANGE": exchange, **extra}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [peer.python, str(SCRIPT)],
        cwd=Path(SCRIPT).parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{peer.name} save bench ({label}) failed:\n{result.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    for problem in figures.get("mismatches", []):
        log(f"outbox: MISMATCH ({peer.name}, {label}): {problem}")
    return figures


def goal(ratio: float, limit: float, at_most: bool = True) -> str:
    ok = ratio <= limit if at_most else ratio >= limit
    sign = "<=" if at_most else ">="
    return f"goal {sign} {limit:g}x: {'met' if ok else 'NOT MET'}"


def rate(seconds: float, count: float) -> str:
    per_s = count / seconds
    return f"{per_s / 1000:.1f}k" if per_s >= 10_000 else f"{per_s:.0f}"


class Row:
    """Builds the table line of one operation from both peers' figures."""

    def __init__(self, ours: dict[str, Any], theirs: dict[str, Any]) -> None:
        self.ours, self.theirs = ours, theirs

    def single(
        self, metric: str, kind: str, op: str, goal_limit: float | None, peers_kind: bool = True
    ) -> Result:
        key, plain_key = f"{kind}_{op}_us", f"plain_{op}_us"
        ours = self.ours.get(key)
        theirs = self.theirs.get(key) if peers_kind else None
        plain = self.ours.get(plain_key) or self.theirs.get(plain_key)
        notes = []
        if ours is not None and plain:
            ratio = ours / plain
            notes.append(
                f"ours {ratio:.2f}x plain" + (f" ({goal(ratio, goal_limit)})" if goal_limit else "")
            )
        if theirs is not None and self.theirs.get(plain_key):
            notes.append(f"theirs {theirs / self.theirs[plain_key]:.2f}x its plain")
        if ours is not None and theirs is not None:
            notes.append(f"ours/theirs {ours / theirs:.2f}")
        per_s = [
            f"{name} {1e6 / value:,.0f}"
            for name, value in (("plain", plain), ("ours", ours), ("theirs", theirs))
            if value
        ]
        notes.append("ops/s: " + ", ".join(per_s))
        return Result(
            "outbox",
            metric,
            ours / 1000 if ours is not None else None,
            theirs / 1000 if theirs is not None else None,
            "; ".join(notes),
            plain=plain / 1000 if plain else None,
        )

    def bulk(self, metric: str, op: str, goal_limit: float) -> Result:
        key, plain_key = f"cqrs_{op}_s", f"plain_{op}_s"
        ours, theirs = self.ours.get(key), self.theirs.get(key)
        plain = self.ours.get(plain_key) or self.theirs.get(plain_key)
        rows = float(self.ours.get("bulk_rows") or self.theirs.get("bulk_rows") or BULK)
        notes = []
        if ours is not None and plain:
            notes.append(f"ours {ours / plain:.2f}x plain ({goal(ours / plain, goal_limit)})")
        if theirs is not None and self.theirs.get(plain_key):
            notes.append(f"theirs {theirs / self.theirs[plain_key]:.2f}x its plain")
        if ours is not None and theirs is not None:
            notes.append(f"ours/theirs {ours / theirs:.2f}")
        notes.append(
            "rows/s: "
            + ", ".join(
                f"{n} {rate(v, rows)}"
                for n, v in (("plain", plain), ("ours", ours), ("theirs", theirs))
                if v
            )
        )
        if f"{op}_drain_s" in self.ours:
            notes.append(
                f"ours' events all in the queue {self.ours[f'{op}_drain_s']:.2f}s after the call returned (untimed)"
            )
        return Result("outbox", metric, ours, theirs, "; ".join(notes), plain=plain)


def checks(runs: dict[str, dict[str, Any]]) -> Result:
    parts, problems = [], []
    for label, figures in runs.items():
        parts.append(
            f"{label}: {figures.get('sink_count')}/{figures.get('sink_expected')} msgs, {figures.get('wire_bytes')} B"
        )
        problems += [f"{label}: {p}" for p in figures.get("mismatches", [])]
    note = (
        ("MISMATCH!!! " + " | ".join(problems) + " || ")
        if problems
        else "all rows and messages as expected; "
    )
    return Result(
        "outbox",
        "checks: messages in the sink / expected, bytes of one message",
        None,
        None,
        note + "; ".join(parts),
    )


@workload("outbox", "save-overhead")
def save_overhead(ctx: Context) -> list[Result]:
    main = {
        "BENCH_MODE": "main",
        "BENCH_N": str(SAVES),
        "BENCH_BULK": str(BULK),
        "BENCH_BULK_ROUNDS": str(BULK_ROUNDS),
    }
    runs: dict[str, dict[str, Any]] = {}
    figures: dict[str, dict[str, Any]] = {}
    for peer in ctx.peers:
        relay = RELAY_EVENTS if peer.name == "ours" else 0
        log(
            f"outbox: {SAVES} creates/updates/deletes per kind, bulk ops of {BULK} rows, relay of {relay} events ({peer.name})"
        )
        figures[peer.name] = runs[f"{peer.name} main"] = run_peer(
            ctx, peer, "save", {**main, "BENCH_RELAY": str(relay)}
        )
    table = Row(figures.get("ours", {}), figures.get("theirs", {}))
    rows = []
    for op in ("create", "update", "delete"):
        rows.append(table.single(f"{OPS[op]}, own transaction, per 1000", "cqrs", op, SAVE_GOAL))
    for op in ("create", "update", "delete"):
        rows.append(
            table.single(
                f"{OPS[op]}, CQRS_TRACKED_FIELDS='__all__', per 1000", "tracked", op, SAVE_GOAL
            )
        )
    for op in ("create", "update", "delete"):
        if f"trigger_{op}_us" in figures.get("ours", {}):
            result = table.single(
                f"{OPS[op]}, CQRS_DB_TRIGGERS (extra line), per 1000",
                "trigger",
                op,
                None,
                peers_kind=False,
            )
            result.note = "extra line, ours only; " + result.note
            rows.append(result)
    rows.append(
        table.bulk(f"cqrs.bulk_create {BULK} rows, batches of 500", "bulk_create", BULK_CREATE_GOAL)
    )
    rows.append(
        table.bulk(
            f"cqrs.bulk_update {BULK} rows vs QuerySet.update", "bulk_update", BULK_UPDATE_GOAL
        )
    )
    ours = figures.get("ours", {})
    if "relay_s" in ours:
        per_s = ours["relay_events_per_s"]
        met = "met" if per_s >= RELAY_GOAL else "NOT MET"
        rows.append(
            Result(
                "outbox",
                f"relay: backlog of {int(ours['relay_events'])} events",
                ours["relay_s"],
                None,
                f"ours only: {per_s:,.0f} events/s with publisher confirms (goal >= {RELAY_GOAL:,.0f}/s: {met})",
            )
        )
    if RELAY_MODE_SAVES and any(peer.name == "ours" for peer in ctx.peers):
        ours_peer = next(peer for peer in ctx.peers if peer.name == "ours")
        log(f"outbox: {RELAY_MODE_SAVES} operations per kind, outbox_publish='relay' + a relay process (ours)")
        relayed = runs["ours outbox_publish=relay"] = run_peer(
            ctx, ours_peer, "relaymode", {"BENCH_MODE": "relay", "BENCH_N": str(RELAY_MODE_SAVES)}
        )
        rtable = Row(relayed, {})
        for op in ("create", "update", "delete"):
            result = rtable.single(
                f"{OPS[op]}, outbox_publish='relay' + cqrs_relay process, per 1000",
                "cqrs",
                op,
                SAVE_GOAL,
                peers_kind=False,
            )
            result.note = "ours only, publishing in a second process on the same machine; " + result.note
            rows.append(result)
    for age in REQUEST_AGES if REQUEST_SAVES else []:
        request = {
            "BENCH_MODE": "request",
            "BENCH_N": str(REQUEST_SAVES),
            "BENCH_CONN_MAX_AGE": age,
        }
        variant: dict[str, dict[str, Any]] = {}
        for peer in ctx.peers:
            log(
                f"outbox: {REQUEST_SAVES} simulated requests per operation, CONN_MAX_AGE={age} ({peer.name})"
            )
            variant[peer.name] = runs[f"{peer.name} request CONN_MAX_AGE={age}"] = run_peer(
                ctx, peer, f"req{age}", request
            )
        vtable = Row(variant.get("ours", {}), variant.get("theirs", {}))
        for op in ("create", "update", "delete"):
            result = vtable.single(
                f"request + CONN_MAX_AGE={age.capitalize()}: {OPS[op]}, per 1000", "cqrs", op, None
            )
            result.note = "labelled variant, no goal: each op in request signals; " + result.note
            rows.append(result)
    rows.append(checks(runs))
    return rows
