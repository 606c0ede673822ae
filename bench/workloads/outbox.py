"""Group ``outbox``: what publishing costs the master (issue: zero-loss delivery).

* single-row ``save()`` in its own transaction (create, then update) of a CQRS master model
  against the same save of a plain model with the same columns, plain and CQRS saves
  alternating, medians per operation (``bench/savebench/run_save.py``, run by each peer's Python);
  ours also with a ``CQRS_DB_TRIGGERS`` model (the outbox row is written by the trigger inside the
  statement: no extra round trip);
* ``Model.cqrs.bulk_update`` of 5,000 rows against a plain ``QuerySet.update`` of the same rows;
* ours only: relay throughput for a backlog of outbox events, publisher confirms on.

The ratio column of the table is theirs/ours of the CQRS timings; the overheads against the plain
model (the issue's goals: ≤ 1.25× for saves, ≤ 3× for the bulk update) are in the notes.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from framework import ROOT, Context, Peer, Result, log, workload

SCRIPT = ROOT / "bench" / "savebench" / "run_save.py"
SAVES = int(os.environ.get("BENCH_SAVES", "2000"))
RELAY_EVENTS = int(os.environ.get("BENCH_RELAY_EVENTS", "50000"))


def run_peer(ctx: Context, peer: Peer, relay: int) -> dict[str, float]:
    db = ctx.create_database(f"{peer.name}_save")
    exchange, _queue = ctx.exchange_and_queue(f"{peer.name}_save")
    env = {
        **os.environ,
        "BENCH_DB": db,
        "BENCH_EXCHANGE": exchange,
        "BENCH_N": str(SAVES),
        "BENCH_BULK": "5000",
        "BENCH_RELAY": str(relay),
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [peer.python, str(SCRIPT)], cwd=Path(SCRIPT).parent, env=env, capture_output=True, text=True, timeout=900
    )
    if result.returncode != 0:
        raise RuntimeError(f"{peer.name} save bench failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@workload("outbox", "save-overhead")
def save_overhead(ctx: Context) -> list[Result]:
    figures: dict[str, dict[str, float]] = {}
    for peer in ctx.peers:
        log(f"outbox: {SAVES} creates and updates, bulk update of 5000 rows ({peer.name})")
        figures[peer.name] = run_peer(ctx, peer, RELAY_EVENTS if peer.name == "ours" else 0)
    ours, theirs = figures.get("ours", {}), figures.get("theirs", {})

    def overhead(peer: dict[str, float], key: str) -> str:
        return f"{peer[key]:.2f}x plain" if key in peer else "-"

    rows = []
    for op in ("create", "update"):
        rows.append(
            Result(
                "outbox",
                f"save() {op}, own transaction, per 1000",
                ours.get(f"cqrs_{op}_us", 0) / 1000 or None,
                theirs.get(f"cqrs_{op}_us", 0) / 1000 or None,
                f"ours {overhead(ours, op + '_ratio')}, theirs {overhead(theirs, op + '_ratio')} (goal <= 1.25x)",
            )
        )
    for op in ("create", "update"):
        if f"trigger_{op}_us" in ours:
            rows.append(
                Result(
                    "outbox",
                    f"save() {op}, CQRS_DB_TRIGGERS model, per 1000",
                    ours[f"trigger_{op}_us"] / 1000,
                    None,
                    f"ours {overhead(ours, 'trigger_' + op + '_ratio')} (outbox row written by the trigger)",
                )
            )
    rows.append(
        Result(
            "outbox",
            "cqrs.bulk_update of 5000 rows",
            ours.get("cqrs_bulk_update_s"),
            theirs.get("cqrs_bulk_update_s"),
            f"ours {overhead(ours, 'bulk_update_ratio')}, theirs {overhead(theirs, 'bulk_update_ratio')} (goal <= 3x)",
        )
    )
    if "relay_s" in ours:
        rows.append(
            Result(
                "outbox",
                f"relay: backlog of {int(ours['relay_events'])} events",
                ours["relay_s"],
                None,
                f"{ours['relay_events_per_s']:.0f} events/s with publisher confirms (ours only)",
            )
        )
    return rows
