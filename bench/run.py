"""``make bench`` (or ``.venv/bin/python bench/run.py [--only GROUP] [--rows N]``).

Runs every registered workload with dj_cqrs (ours, this checkout's .venv) and django-cqrs 3.1.0
(theirs, a cached virtualenv under .cache/) against the local PostgreSQL and RabbitMQ, then prints
one table: seconds for ours and theirs, and theirs/ours (group outbox adds a column for plain
Django, the same operations without CQRS). See bench/README.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

import framework  # noqa: E402
import workloads  # noqa: E402,F401 - registers the workloads


def main(argv: list[str] | None = None) -> int:
    groups = sorted({w.group for w in framework.WORKLOADS} | {f"{w.group}/{w.name}" for w in framework.WORKLOADS})
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", default=[], help=f"workload groups or group/name to run (repeatable, comma-separated): {', '.join(groups)}")
    parser.add_argument("--rows", type=int, default=100_000, help="rows per workload (default 100000)")
    parser.add_argument(
        "--peers", default="ours,theirs", help="comma-separated: ours, theirs (default both)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (dumps, diff streams)")
    args = parser.parse_args(argv)
    selected = {g for item in args.only for g in item.split(",") if g}
    unknown = selected - set(groups)
    if unknown:
        parser.error(f"unknown group(s): {', '.join(sorted(unknown))}; known: {', '.join(groups)}")
    names = [p.strip() for p in args.peers.split(",") if p.strip()]
    peers = []
    if "ours" in names:
        peers.append(framework.Peer("ours", sys.executable))
    if "theirs" in names:
        from integration_tests.compat.peer import ensure_peer_python as ensure_venv

        framework.log("preparing the django-cqrs 3.1.0 virtualenv (cached under .cache/)")
        peers.append(framework.Peer("theirs", ensure_venv()))
    if not peers:
        parser.error("--peers must name ours and/or theirs")

    workdir = framework.make_workdir()
    ctx = framework.Context(args.rows, peers, workdir)
    results: list[framework.Result] = []
    started = time.perf_counter()
    try:
        for item in framework.WORKLOADS:
            if selected and not selected & {item.group, f"{item.group}/{item.name}"}:
                continue
            framework.log(f"workload {item.group}/{item.name}")
            results.extend(item.func(ctx))
    finally:
        ctx.cleanup()
        if args.keep:
            framework.log(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(f"dj_cqrs benchmarks: {args.rows} rows, peers {', '.join(p.name for p in peers)}, "
          f"total {time.perf_counter() - started:.0f}s")
    print(framework.format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
