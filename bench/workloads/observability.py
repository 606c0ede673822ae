"""Group ``observability``: what the issue-15 hooks cost the master's save path.

``bench/savebench/run_save.py`` in ``BENCH_MODE=observe`` measures, in one process and on the
model of group ``outbox``, plain Django and the master model side by side (single-row create,
update, delete in autocommit; medians of BENCH_OBSERVE_SAVES per kind) in four states: hooks off
(``CQRS['tracing'] = False``, ``CQRS['metrics'] = False``), tracing on with no span active (what a
service that does not trace pays with opentelemetry-api installed), every operation inside a
sampled OpenTelemetry SDK span (plain operations too, so the span's own cost cancels out of the
ratio), and Prometheus metrics on. django-cqrs 3.1.0, which has no such hooks, runs the first
state only, as the reference.

Columns: seconds per 1000 operations; ``plain`` is plain Django in the same state and process.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from framework import Context, Result, log, workload

from workloads.outbox import OPS, run_peer
from workloads.replica import PRODUCT, apply_once, check_notes, rate_note, services

SAVES = int(os.environ.get("BENCH_OBSERVE_SAVES", "1000"))
STATES = {
    "off": "hooks off",
    "tracing": "tracing on, no span active",
    "span": "inside a sampled OpenTelemetry span",
    "metrics": "Prometheus metrics on",
}


def _row(state: str, op: str, ours: dict[str, Any], theirs: dict[str, Any]) -> Result | None:
    key, plain_key = f"{state}_cqrs_{op}_us", f"{state}_plain_{op}_us"
    mine, plain = ours.get(key), ours.get(plain_key)
    if mine is None:
        return None
    other = theirs.get(key) if state == "off" else None
    notes = []
    if plain:
        notes.append(f"ours {mine / plain:.2f}x plain, +{mine - plain:.0f} µs per operation")
    base = ours.get(f"off_cqrs_{op}_us")
    if state != "off" and base:
        notes.append(f"{mine - base:+.1f} µs against ours with the hooks off")
    if other is not None and theirs.get(f"off_plain_{op}_us"):
        notes.append(f"theirs {other / theirs[f'off_plain_{op}_us']:.2f}x its plain")
        notes.append(f"ours/theirs {mine / other:.2f}")
    return Result(
        "observability",
        f"{OPS[op]}, {STATES[state]}, per 1000",
        mine / 1000,
        other / 1000 if other is not None else None,
        "; ".join(notes),
        plain=plain / 1000 if plain else None,
    )


@workload("observability", "save-path")
def save_path(ctx: Context) -> list[Result]:
    figures: dict[str, dict[str, Any]] = {}
    for peer in ctx.peers:
        log(f"observability: {SAVES} creates/updates/deletes per kind and state ({peer.name})")
        figures[peer.name] = run_peer(
            ctx, peer, "observe", {"BENCH_MODE": "observe", "BENCH_N": str(SAVES)}
        )
    ours, theirs = figures.get("ours", {}), figures.get("theirs", {})
    rows = [
        row for state in STATES for op in OPS if (row := _row(state, op, ours, theirs)) is not None
    ]
    problems = [f"{name}: {p}" for name, f in figures.items() for p in f.get("mismatches", [])]
    counts = "; ".join(
        f"{name}: {f.get('sink_count')}/{f.get('sink_expected')} msgs"
        for name, f in figures.items()
    )
    rows.append(
        Result(
            "observability",
            "checks: messages in the sink / expected",
            None,
            None,
            ("MISMATCH!!! " + " | ".join(problems) + " || " if problems else "all as expected; ")
            + counts,
        )
    )
    return rows


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: Messages of the consumer figures (creates of the realistic model, pre-published).
CONSUME_MESSAGES = int(os.environ.get("BENCH_OBSERVE_MESSAGES", "60000"))


@workload("observability", "consume")
def consume(ctx: Context) -> list[Result]:
    """``cqrs_consume -w N`` applying a backlog of creates, without and with ``--metrics-port``
    (every apply counted, histograms of batch size, apply time and lag; the workers' values in
    the multi-process directory). Ours only: django-cqrs has no metrics (group ``replica`` has
    its figures)."""
    ours = ctx.peer("ours")
    if ours is None:
        return []
    _master, replica = services(ctx, ours)
    rows = []
    for workers in (1, 2):
        outcomes = {}
        for label, args in (
            ("no metrics", ()),
            ("--metrics-port", ("--metrics-port", str(free_port()))),
        ):
            log(f"observability: cqrs_consume -w {workers} {label}, {CONSUME_MESSAGES} creates")
            outcomes[label] = apply_once(
                ctx, replica, PRODUCT, "creates", workers, CONSUME_MESSAGES, extra_args=args
            )
        off, on = outcomes["no metrics"], outcomes["--metrics-port"]
        notes = []
        if off["rate"] and on["rate"]:
            notes.append(f"with metrics {on['rate'] / off['rate']:.2f}x the rate without")
        notes += [rate_note(name, outcome) for name, outcome in outcomes.items()]
        notes += check_notes(outcomes)
        rows.append(
            Result(
                "observability",
                f"apply creates, -w {workers}, with --metrics-port, s/1000 msgs",
                1000 / on["rate"] if on["rate"] else None,
                None,
                "ours only; the 'plain' column is ours without metrics; " + "; ".join(notes),
                plain=1000 / off["rate"] if off["rate"] else None,
            )
        )
    return rows
