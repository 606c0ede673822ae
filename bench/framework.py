"""A small benchmark framework: the same workload run with dj_cqrs (ours) and django-cqrs 3.1.0
(theirs) in one run, on the same PostgreSQL and RabbitMQ, timing whole commands and processes.

A workload is a function registered with :func:`workload` under a group name. It receives a
:class:`Context` (row count, peers, helpers for databases, brokers and the integration services)
and returns :class:`Result` rows; ``run.py`` prints them as one table. Add a workload module under
``bench/workloads/`` and import it in ``bench/workloads/__init__.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ROOT / "integration_tests" / "services"
PG = {"host": os.environ.get("BENCH_DB_HOST", "127.0.0.1"), "port": int(os.environ.get("BENCH_DB_PORT", "5432")), "user": "postgres"}
AMQP = (os.environ.get("BENCH_RABBIT_HOST", "127.0.0.1"), int(os.environ.get("BENCH_RABBIT_PORT", "5672")))


@dataclasses.dataclass(frozen=True)
class Peer:
    """One implementation under test: a name and the Python whose ``dj_cqrs`` it is."""

    name: str
    python: str


@dataclasses.dataclass
class Result:
    """One line of the table. ``ours``/``theirs`` are seconds (None: not run); ``plain`` is the same
    operation without CQRS (plain Django), shown in its own column when a result has one."""

    group: str
    metric: str
    ours: float | None = None
    theirs: float | None = None
    note: str = ""
    plain: float | None = None

    @property
    def ratio(self) -> float | None:
        if self.ours and self.theirs:
            return self.theirs / self.ours
        return None


@dataclasses.dataclass
class Workload:
    group: str
    name: str
    func: Callable[[Context], list[Result]]


WORKLOADS: list[Workload] = []


def workload(group: str, name: str) -> Callable[[Callable[[Context], list[Result]]], Callable[[Context], list[Result]]]:
    """Register a workload function under ``group`` (selected with ``--only group``)."""

    def register(func: Callable[[Context], list[Result]]) -> Callable[[Context], list[Result]]:
        WORKLOADS.append(Workload(group, name, func))
        return func

    return register


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- services ---------------------------------------------------------------------------------------


class Service:
    """An integration-test service (``master`` or ``replica``) of one peer, with its own database."""

    def __init__(self, ctx: Context, peer: Peer, role: str, db: str, exchange: str, queue: str) -> None:
        self.peer = peer
        self.role = role
        self.db = db
        self.dir = SERVICES / role
        self.env = {
            **os.environ,
            "IT_DB_NAME": db,
            "IT_CQRS_EXCHANGE": exchange,
            "IT_CQRS_QUEUE": queue,
            "PYTHONUNBUFFERED": "1",
        }
        self.env.pop("PYTHONPATH", None)
        self.env.pop("DJANGO_SETTINGS_MODULE", None)

    def command(self, *args: str) -> str:
        """A shell command line running ``manage.py args`` for this service (for pipes)."""
        env = f"IT_DB_NAME={shlex.quote(self.db)}"
        args_text = " ".join(shlex.quote(a) for a in args)
        return f"(cd {shlex.quote(str(self.dir))} && env {env} {shlex.quote(self.peer.python)} manage.py {args_text})"

    def manage(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.peer.python, "manage.py", *args], cwd=self.dir, env=self.env, capture_output=True, text=True
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"{self.peer.name} {self.role} manage.py {' '.join(args)} failed:\n{result.stderr[-3000:]}")
        return result


def timed_shell(command: str, env: dict[str, str], stdout: Any = subprocess.DEVNULL) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run a shell command line (pipes allowed, ``pipefail`` on); return (seconds, result)."""
    start = time.perf_counter()
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command], env=env, stdout=stdout, stderr=subprocess.PIPE, text=True
    )
    return time.perf_counter() - start, result


def best_of(runs: int, measure: Callable[[], float]) -> float:
    """The fastest of ``runs`` measurements (the machine is shared: the minimum is the least noisy)."""
    return min(measure() for _ in range(max(1, runs)))


# -- context ----------------------------------------------------------------------------------------


class Context:
    def __init__(self, rows: int, peers: list[Peer], workdir: Path) -> None:
        self.rows = rows
        self.peers = peers
        self.workdir = workdir
        self.run_id = uuid.uuid4().hex[:8]
        self._databases: list[str] = []
        self._exchanges: list[tuple[str, list[str]]] = []

    def peer(self, name: str) -> Peer | None:
        return next((p for p in self.peers if p.name == name), None)

    # PostgreSQL
    def connect(self, db: str = "postgres") -> Any:
        import psycopg2

        return psycopg2.connect(dbname=db, **PG)

    def create_database(self, label: str) -> str:
        name = f"bench_{self.run_id}_{label}"
        conn = self.connect()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        self._databases.append(name)
        return name

    # RabbitMQ
    def exchange_and_queue(self, label: str) -> tuple[str, str]:
        exchange, queue = f"bench_{self.run_id}_{label}", f"bench_{self.run_id}_{label}_q"
        self._exchanges.append((exchange, [queue, f"dead_letter_{queue}"]))
        return exchange, queue

    def services(self, peer: Peer, label: str) -> tuple[Service, Service]:
        """A migrated master and replica service of ``peer`` sharing a fresh exchange and queue."""
        exchange, queue = self.exchange_and_queue(f"{peer.name}_{label}")
        master = Service(self, peer, "master", self.create_database(f"{peer.name}_{label}_m"), exchange, queue)
        replica = Service(self, peer, "replica", self.create_database(f"{peer.name}_{label}_r"), exchange, queue)
        master.manage("migrate", "-v", "0")
        replica.manage("migrate", "-v", "0")
        return master, replica

    @contextlib.contextmanager
    def amqp_channel(self) -> Iterator[Any]:
        import pika

        conn = pika.BlockingConnection(pika.ConnectionParameters(*AMQP))
        try:
            yield conn.channel()
        finally:
            with contextlib.suppress(Exception):
                conn.close()

    def cleanup(self) -> None:
        conn = self.connect()
        conn.autocommit = True
        with conn.cursor() as cur:
            for name in self._databases:
                cur.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                    [name],
                )
                cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.close()
        with contextlib.suppress(Exception), self.amqp_channel() as channel:
            for exchange, queues in self._exchanges:
                for queue in queues:
                    with contextlib.suppress(Exception):
                        channel.queue_delete(queue)
                with contextlib.suppress(Exception):
                    channel.exchange_delete(exchange)


def make_workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="dj_cqrs_bench_"))


# -- output -----------------------------------------------------------------------------------------


def format_table(results: list[Result]) -> str:
    def seconds(value: float | None) -> str:
        if value is None:
            return "-"
        return f"{value:.2f}" if value >= 0.1 else f"{value:.4f}"  # latencies: milliseconds stay visible

    header: tuple[str, ...] = ("group", "metric", "ours (s)", "theirs (s)", "theirs/ours", "notes")
    body: list[tuple[str, ...]] = [
        (r.group, r.metric, seconds(r.ours), seconds(r.theirs), "-" if r.ratio is None else f"{r.ratio:.1f}x", r.note)
        for r in results
    ]
    if any(r.plain is not None for r in results):  # the plain-Django column (group outbox)
        header = (*header[:2], "plain (s)", *header[2:])
        body = [(*row[:2], seconds(r.plain), *row[2:]) for row, r in zip(body, results, strict=True)]
    widths = [max(len(str(row[i])) for row in [header, *body]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *body]:
        cells = [str(row[i]).ljust(widths[i]) if i < 2 else str(row[i]).rjust(widths[i]) for i in range(len(widths))]
        lines.append("  ".join(cells) + "  " + row[-1])
        if row is header:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 5)
    return "\n".join(lines)
