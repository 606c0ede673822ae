#!/usr/bin/env python
"""dj_cqrs end to end: a master service and a replica service, and the replica converging.

``make demo`` runs this with no server at all: two Django projects on SQLite
(``examples/master_service`` owns products and customers, ``examples/replica_service`` keeps
read-only copies), connected by kombu's ``filesystem://`` broker through
``dj_cqrs.transport.KombuTransport``. It migrates both databases, starts the replica's
``manage.py cqrs_consume``, makes creates, updates and deletes on the master
(``manage.py demo_write``), shows the replica catching up, stops the consumer with SIGTERM, then
compares the replica with the master field by field. The last line is ``CONVERGED`` (exit 0) or
``NOT CONVERGED`` (exit 1).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

EXAMPLES = Path(__file__).resolve().parent
MASTER_DIR = EXAMPLES / "master_service"
REPLICA_DIR = EXAMPLES / "replica_service"
DEFAULT_WORKDIR = EXAMPLES / ".demo"
WORKDIR_MARKER = ".dj_cqrs_demo"
CQRS_IDS = ("product", "customer")
LABELS = {"product": "products", "customer": "customers"}

EPILOG = """\
environment:
  DEMO_BROKER_URL    broker to use instead of kombu's server-less filesystem:// broker.
                     amqp://... or amqps://... uses dj_cqrs.transport.RabbitMQTransport,
                     any other kombu URL (e.g. redis://127.0.0.1:6379/0) KombuTransport.
                     Each run uses its own exchange and queue names and deletes them at the end.
  DEMO_DATABASE_URL  PostgreSQL server to use instead of SQLite files, e.g.
                     postgres://postgres@127.0.0.1:5432/ ; the demo creates two databases with
                     unique names (master and replica) and drops them at the end.

example:
  DEMO_BROKER_URL=amqp://guest:guest@127.0.0.1:5672/%2F \\
  DEMO_DATABASE_URL=postgres://postgres@127.0.0.1:5432/ make demo
"""


class DemoError(Exception):
    """A step of the demo failed; the message says which one and why."""


def say(text: str = "") -> None:
    print(text, flush=True)


# -- broker ------------------------------------------------------------------------------------


class Broker:
    """Where the two services meet, and how to tell that the replica's queue is ready."""

    def __init__(self, url: str | None, workdir: Path, run_id: str) -> None:
        self.url = url or "filesystem://"
        scheme = urlparse(self.url).scheme
        if scheme in ("memory", ""):
            raise DemoError(
                f"DEMO_BROKER_URL={self.url!r} cannot connect two processes; use amqp://, redis:// ..."
            )
        self.rabbitmq = scheme in ("amqp", "amqps")
        self.transport = (
            "dj_cqrs.transport.RabbitMQTransport" if self.rabbitmq else "dj_cqrs.transport.KombuTransport"
        )
        self.filesystem = scheme == "filesystem"
        self.exchange = f"cqrs_demo_{run_id}"
        self.queue = f"storefront_{run_id}"
        self.dir = workdir / "broker"
        self.transport_options: dict[str, Any] = {}
        if self.filesystem:
            # The same options as in the services' settings.py (for the readiness check).
            self.transport_options = {
                "data_folder_in": str(self.dir / "messages"),
                "data_folder_out": str(self.dir / "messages"),
                "control_folder": str(self.dir / "control"),
            }

    def describe(self) -> str:
        if self.filesystem:
            return f"kombu filesystem:// in {_rel(self.dir)} (no server)"
        kind = "RabbitMQTransport (pika)" if self.rabbitmq else "KombuTransport"
        return f"{_mask(self.url)} via {kind}"

    def env(self) -> dict[str, str]:
        return {
            "DEMO_CQRS_TRANSPORT": self.transport,
            "DEMO_CQRS_URL": self.url,
            "DEMO_CQRS_EXCHANGE": self.exchange,
            "DEMO_CQRS_QUEUE": self.queue,
            "DEMO_BROKER_DIR": str(self.dir),
        }

    def prepare(self) -> None:
        if self.filesystem:
            for sub in ("messages", "control", "processed"):
                (self.dir / sub).mkdir(parents=True, exist_ok=True)
            return
        try:
            with self._connection() as conn:
                conn.ensure_connection(max_retries=1, timeout=5)
        except Exception as exc:  # noqa: BLE001 - any driver error means "not reachable"
            raise DemoError(f"cannot reach the broker at {_mask(self.url)}: {exc}") from exc

    def _connection(self) -> Any:
        import kombu

        return kombu.Connection(self.url, transport_options=dict(self.transport_options), connect_timeout=5)

    def queue_ready(self) -> bool:
        """True once the consumer has declared its queue and bound it for every CQRS_ID.

        Messages published before that have no queue to go to and are lost, as on any AMQP
        broker, so the master must not write before.
        """
        with self._connection() as conn:
            channel = conn.channel()
            try:
                if hasattr(channel, "get_table"):  # kombu virtual transports: filesystem, redis
                    bound = {(rk, queue) for rk, _pattern, queue in channel.get_table(self.exchange)}
                    return all((cqrs_id, self.queue) in bound for cqrs_id in CQRS_IDS)
                # AMQP: the consumer subscribes only after declaring and binding its queue.
                _name, _messages, consumers = channel.queue_declare(queue=self.queue, passive=True)
                return bool(consumers)
            finally:
                with contextlib.suppress(Exception):
                    channel.close()

    def cleanup(self) -> None:
        """Delete this run's queues and exchange from a real broker (best effort)."""
        if self.filesystem:
            return  # the work dir is wiped by the next run
        queues = (self.queue, f"dead_letter_{self.queue}")
        with contextlib.suppress(Exception), self._connection() as conn:
            channel = conn.channel()
            if hasattr(channel, "get_table"):
                # kombu keeps virtual bindings in the broker (e.g. a Redis set): drop ours.
                for rk, pattern, queue in channel.get_table(self.exchange):
                    if queue in queues:
                        channel._delete(queue, self.exchange, rk, pattern)
            for queue in queues:
                with contextlib.suppress(Exception):
                    channel.queue_delete(queue)
            with contextlib.suppress(Exception):
                channel.exchange_delete(self.exchange)


# -- databases ---------------------------------------------------------------------------------


@contextlib.contextmanager
def databases(url: str | None, workdir: Path, run_id: str) -> Iterator[tuple[dict[str, str], dict[str, str], str]]:
    """Environment for the master's and the replica's database, and a description."""
    if not url:
        master, replica = workdir / "master.sqlite3", workdir / "replica.sqlite3"
        yield (
            {"DEMO_DB_ENGINE": "sqlite3", "DEMO_DB_NAME": str(master)},
            {"DEMO_DB_ENGINE": "sqlite3", "DEMO_DB_NAME": str(replica)},
            f"SQLite {_rel(master)}, {_rel(replica)}",
        )
        return
    parts = urlparse(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise DemoError(f"DEMO_DATABASE_URL must be a postgres:// URL, got {_mask(url)!r}")
    server = {
        "host": parts.hostname or "127.0.0.1",
        "port": str(parts.port or 5432),
        "user": unquote(parts.username or "postgres"),
        "password": unquote(parts.password or ""),
    }
    try:
        import psycopg2
    except ImportError as exc:
        raise DemoError("DEMO_DATABASE_URL needs psycopg2 (pip install 'dj-cqrs[postgres]')") from exc
    names = [f"dj_cqrs_demo_{run_id}_master", f"dj_cqrs_demo_{run_id}_replica"]
    try:
        admin = psycopg2.connect(dbname=parts.path.lstrip("/") or "postgres", connect_timeout=5, **server)
    except psycopg2.Error as exc:
        raise DemoError(f"cannot reach PostgreSQL at {_mask(url)}: {exc}".strip()) from exc
    admin.autocommit = True
    created: list[str] = []
    try:
        with admin.cursor() as cur:
            for name in names:
                cur.execute(f'CREATE DATABASE "{name}"')
                created.append(name)
        common = {
            "DEMO_DB_ENGINE": "postgresql",
            "DEMO_DB_HOST": server["host"],
            "DEMO_DB_PORT": server["port"],
            "DEMO_DB_USER": server["user"],
            "DEMO_DB_PASSWORD": server["password"],
        }
        yield (
            {**common, "DEMO_DB_NAME": names[0]},
            {**common, "DEMO_DB_NAME": names[1]},
            f"PostgreSQL {server['host']}:{server['port']} {names[0]}, {names[1]} (dropped at the end)",
        )
    finally:
        with admin.cursor() as cur:
            for name in created:
                with contextlib.suppress(psycopg2.Error):
                    cur.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = %s AND pid <> pg_backend_pid()",
                        [name],
                    )
                    cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()


# -- services ----------------------------------------------------------------------------------


class Service:
    """One of the two Django projects, driven through its ``manage.py``."""

    def __init__(self, name: str, directory: Path, env: dict[str, str]) -> None:
        self.name = name
        self.directory = directory
        self.env = env

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "manage.py", *args]

    def manage(self, *args: str, timeout: float = 60) -> str:
        try:
            result = subprocess.run(
                self.command(*args), cwd=self.directory, env=self.env,
                capture_output=True, text=True, timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise DemoError(f"{self.name}: manage.py {' '.join(args)} did not finish in {timeout:.0f}s") from exc
        if result.returncode != 0:
            raise DemoError(
                f"{self.name}: manage.py {' '.join(args)} exited with {result.returncode}"
                + _tail(result.stderr or result.stdout)
            )
        return result.stdout

    def state(self) -> dict[str, Any]:
        return json.loads(self.manage("demo_state"))  # type: ignore[no-any-return]

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(*args), cwd=self.directory, env=self.env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )


def migrate(services: list[Service], timeout: float) -> None:
    """Migrate every service's database, in parallel."""
    running = [
        (s, subprocess.Popen(s.command("migrate", "-v", "0"), cwd=s.directory, env=s.env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        for s in services
    ]
    errors = []
    for service, process in running:
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            errors.append(f"{service.name}: migrate did not finish in {timeout:.0f}s")
            continue
        if process.returncode != 0:
            errors.append(f"{service.name}: migrate exited with {process.returncode}{_tail(output)}")
    if errors:
        raise DemoError("\n".join(errors))


class Consumer:
    """``manage.py cqrs_consume`` of the replica, as a subprocess logging to a file."""

    def __init__(self, replica: Service, log_path: Path) -> None:
        self.log_path = log_path
        self.log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        env = {**replica.env, "DEMO_LOG_LEVEL": "INFO"}
        self.process = subprocess.Popen(
            replica.command("cqrs_consume", "--workers", "1"), cwd=replica.directory, env=env,
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise DemoError(
                f"the replica consumer exited with {self.process.returncode}{_tail(self.log_text())}"
            )

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM, as a process manager would send; the exit code (None if it had to be killed)."""
        code: int | None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                code = self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                code = None
        else:
            code = self.process.returncode
        # Whatever happened, leave no worker process behind.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)
        self.log.close()
        return code

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


# -- comparing ---------------------------------------------------------------------------------


def differences(master: dict[str, Any], replica: dict[str, Any]) -> list[str]:
    """Every difference between the two states, field by field."""
    found = []
    for cqrs_id in CQRS_IDS:
        mine, theirs = master.get(cqrs_id, {}), replica.get(cqrs_id, {})
        for pk in sorted(set(mine) | set(theirs), key=_pk_order):
            if pk not in theirs:
                found.append(f"{cqrs_id} {pk}: missing on the replica")
            elif pk not in mine:
                found.append(f"{cqrs_id} {pk}: still on the replica, deleted on the master")
            else:
                for field in sorted(set(mine[pk]) | set(theirs[pk])):
                    a, b = mine[pk].get(field, "<absent>"), theirs[pk].get(field, "<absent>")
                    if a != b:
                        found.append(f"{cqrs_id} {pk} {field}: master {a!r}, replica {b!r}")
    return found


def progress(master: dict[str, Any], replica: dict[str, Any]) -> tuple[str, bool]:
    """``products  9/12  customers 4/4  (3 deletions pending)`` and whether all are in sync."""
    parts, extra, done = [], 0, True
    for cqrs_id in CQRS_IDS:
        mine, theirs = master.get(cqrs_id, {}), replica.get(cqrs_id, {})
        same = sum(1 for pk, row in mine.items() if theirs.get(pk) == row)
        extra += sum(1 for pk in theirs if pk not in mine)
        done = done and same == len(mine)
        parts.append(f"{LABELS[cqrs_id]} {f'{same}/{len(mine)}':<5}")
    done = done and extra == 0
    text = "  ".join(parts) + (f"  ({extra} deletions pending)" if extra else "")
    return text.rstrip(), done


class Feed:
    """Reads a subprocess's stdout, one JSON object per line, in a thread; keeps the latest."""

    def __init__(self, name: str, process: subprocess.Popen[str]) -> None:
        self.name = name
        self.process = process
        self.first: dict[str, Any] | None = None
        self.latest: dict[str, Any] | None = None
        self.lines = 0
        self.other: collections.deque[str] = collections.deque(maxlen=30)
        self.closed = threading.Event()
        self.fresh = threading.Event()
        threading.Thread(target=self._read, name=f"demo-{name}", daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        try:
            for line in self.process.stdout:
                try:
                    item = json.loads(line)
                except ValueError:
                    item = None
                if not isinstance(item, dict):
                    self.other.append(line.rstrip())  # log lines and tracebacks (stderr)
                    continue
                self.latest = item
                if self.first is None:
                    self.first = item
                self.lines += 1
                self.fresh.set()
        finally:
            self.closed.set()

    def finished(self) -> bool:
        """True once the process has exited and every line it wrote has been read."""
        return self.closed.is_set() and self.process.poll() is not None

    def failure(self) -> str | None:
        """Why the process failed (exit status and stderr), or None."""
        if not self.finished() or self.process.returncode == 0:
            return None
        return f"{self.name} exited with {self.process.returncode}{_tail(chr(10).join(self.other))}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.closed.wait(5)
        if self.process.stdout is not None:
            with contextlib.suppress(OSError):
                self.process.stdout.close()


def run_phase(
    master: Service, watcher: Feed, consumer: Consumer, phase: str, number: int, pace: float, timeout: float
) -> bool:
    """Run one phase of writes on the master while watching the replica catch up.

    Progress lines compare the replica with the master's rows *so far*; the phase is over when the
    writes are done and the replica equals the master's final rows.
    """
    writer = Feed(f"master demo_write {phase}", master.popen("demo_write", phase, "--pace", str(pace)))
    try:
        start = time.monotonic()
        printed_at, printed, planned = -1.0, "", False
        while True:
            consumer.check_alive()
            failure = writer.failure() or watcher.failure()
            if failure is None and watcher.finished():
                failure = "the replica's demo_state --watch stopped"
            if failure:
                raise DemoError(failure)
            if writer.first is not None and not planned:
                say(f"[{number}/6] master: {writer.first.get('plan')}")
                planned = True
            latest = writer.latest or {}
            elapsed = time.monotonic() - start
            if "state" in latest and watcher.latest is not None:
                done = bool(latest.get("done")) and writer.finished()
                text, synced = progress(latest["state"], watcher.latest)
                if (synced and done) or (text != printed and elapsed - printed_at >= 0.25):
                    say(f"      {elapsed:4.1f}s  master {'done   ' if done else 'writing'}  replica in sync: {text}"
                        f"{'  -> converged' if synced and done else ''}")
                    printed_at, printed = elapsed, text
                if synced and done:
                    return True
            if elapsed > timeout:
                say(f"      the replica did not converge within {timeout:g}s")
                return False
            watcher.fresh.clear()
            watcher.fresh.wait(0.2)
    finally:
        writer.stop()


def table(master: dict[str, Any], replica: dict[str, Any]) -> None:
    """The replica's rows, each marked with whether it equals the master's."""
    for cqrs_id, columns in (
        ("product", ("sku", "name", "price", "in_stock")),
        ("customer", ("email", "name", "tier", "joined")),
    ):
        rows = replica.get(cqrs_id, {})
        say(f"      replica {LABELS[cqrs_id]} ({len(rows)} rows, = means equal to the master's row)")
        header = ["id", *columns, "rev", ""]
        body = [
            [pk, *(str(row.get(c)) for c in columns), str(row.get("cqrs_revision")),
             "=" if master.get(cqrs_id, {}).get(pk) == row else "DIFFERENT"]
            for pk, row in sorted(rows.items(), key=lambda item: _pk_order(item[0]))
        ]
        widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
        for line in [header, *body]:
            say("      " + "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


# -- the demo ----------------------------------------------------------------------------------


def prepare_workdir(workdir: Path) -> None:
    """Start from an empty work dir (it is ours only if it carries the marker file)."""
    if workdir.exists():
        if any(workdir.iterdir()) and not (workdir / WORKDIR_MARKER).exists():
            raise DemoError(f"{workdir} is not empty and was not made by this demo; not touching it")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    (workdir / WORKDIR_MARKER).write_text("made by examples/demo.py; wiped on each run\n")


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    workdir = Path(args.workdir).resolve()
    run_id = uuid.uuid4().hex[:8]
    prepare_workdir(workdir)
    broker = Broker(os.environ.get("DEMO_BROKER_URL"), workdir, run_id)
    base_env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    base_env.update(PYTHONUNBUFFERED="1", DEMO_WORKDIR=str(workdir), **broker.env())

    say("dj_cqrs demo: master service -> broker -> replica service")
    say(f"  broker     {broker.describe()}, exchange {broker.exchange}, queue {broker.queue}")
    broker.prepare()
    try:
        failures, counts = _run_services(args, workdir, run_id, broker, base_env)
    finally:
        broker.cleanup()
    elapsed = time.monotonic() - started
    if failures:
        for failure in failures:
            say(f"ERROR: {failure}")
        say(f"NOT CONVERGED: {failures[0].splitlines()[0]} ({elapsed:.1f}s)")
        return 1
    say(f"CONVERGED: the replica equals the master field by field ({counts}) in {elapsed:.1f}s")
    return 0


def _run_services(
    args: argparse.Namespace, workdir: Path, run_id: str, broker: Broker, base_env: dict[str, str]
) -> tuple[list[str], str]:
    """Steps 1-6; the failures found (empty when the replica converged) and the row counts."""
    consumer: Consumer | None = None
    failures: list[str] = []
    counts = ""
    with databases(os.environ.get("DEMO_DATABASE_URL"), workdir, run_id) as (master_db, replica_db, db_text):
        say(f"  databases  {db_text}")
        master = Service("master", MASTER_DIR, {**base_env, **master_db})
        replica = Service("replica", REPLICA_DIR, {**base_env, **replica_db})
        try:
            say("[1/6] migrate the master and the replica databases")
            migrate([master, replica], timeout=120)

            say("[2/6] start the replica consumer: manage.py cqrs_consume")
            consumer = Consumer(replica, workdir / "replica-consumer.log")
            t0 = time.monotonic()
            while not _ready(broker):
                consumer.check_alive()
                if time.monotonic() - t0 > args.timeout:
                    raise DemoError(f"the replica's queue was not ready within {args.timeout:g}s"
                                    + _tail(consumer.log_text()))
                time.sleep(0.2)
            say(f"      queue {broker.queue} bound for {', '.join(CQRS_IDS)} after {time.monotonic() - t0:.1f}s"
                f" (log: {_rel(consumer.log_path)})")

            # The writes come in three phases, each waiting for the replica before the next, so
            # that each step is visible. kombu's filesystem broker (like several workers on any
            # broker) does not deliver in FIFO order; the replica copes by itself (stale
            # revisions are ignored, tombstones keep deleted rows deleted). The final check below
            # is a real, field-by-field comparison.
            watcher = Feed("replica demo_state --watch", replica.popen("demo_state", "--watch", "0.1"))
            try:
                for number, phase in ((3, "create"), (4, "update"), (5, "delete")):
                    if not run_phase(master, watcher, consumer, phase, number, args.pace, args.timeout):
                        failures.append(f"the replica did not converge after the {phase} phase")
                        break
            finally:
                watcher.stop()

            say("[6/6] stop the consumer (SIGTERM), compare the replica with the master")
        except DemoError as exc:
            failures.append(str(exc))
        finally:
            if consumer is not None:
                code = consumer.stop()
                problems = [line for line in consumer.log_text().splitlines()
                            if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback")]
                if problems:
                    # Not a verdict by itself (a retried message can log an error and still apply):
                    # the field-by-field comparison below decides.
                    say(f"      the consumer logged {len(problems)} errors, see {_rel(consumer.log_path)}:"
                        + _tail("\n".join(problems), 5))
                if code == 0:
                    say("      consumer stopped cleanly (exit 0)")
                else:
                    failures.append(f"the consumer did not stop cleanly after SIGTERM (exit {code})"
                                    + _tail(consumer.log_text()))
        try:
            master_state, replica_state = master.state(), replica.state()
        except DemoError as exc:
            failures.append(str(exc))
        else:
            table(master_state, replica_state)
            diffs = differences(master_state, replica_state)
            for line in diffs[:20]:
                say(f"      DIFF {line}")
            if len(diffs) > 20:
                say(f"      ... and {len(diffs) - 20} more differences")
            if diffs:
                failures.append(f"{len(diffs)} differences between the replica and the master")
            counts = ", ".join(f"{len(master_state.get(c, {}))} {LABELS[c]}" for c in CQRS_IDS)
    return failures, counts


def _ready(broker: Broker) -> bool:
    try:
        return broker.queue_ready()
    except Exception:  # noqa: BLE001 - not declared yet (NOT_FOUND, missing file ...)
        return False


def _pk_order(pk: str) -> tuple[int, str]:
    return (int(pk), "") if pk.isdigit() else (sys.maxsize, pk)


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _mask(url: str) -> str:
    parts = urlparse(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url


def _tail(text: str, lines: int = 15) -> str:
    """The last lines of a log, indented, after a newline (empty when there is nothing)."""
    kept = (text or "").strip().splitlines()[-lines:]
    return "".join("\n      | " + line for line in kept)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="examples/demo.py",
        description="Run a master and a replica Django service end to end and check that the replica"
        " converges. Exit status 0 when it does (last line CONVERGED), 1 otherwise (NOT CONVERGED).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds to wait for the consumer's queue and for each phase (default 30)")
    parser.add_argument("--workdir", default=str(DEFAULT_WORKDIR),
                        help="work dir for the SQLite files, the broker folder and the consumer log,"
                        " wiped at the start of each run (default examples/.demo)")
    parser.add_argument("--pace", type=float, default=0.05,
                        help="seconds the master waits after each transaction (default 0.05)")
    args = parser.parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        return run(args)
    except DemoError as exc:
        say(f"ERROR: {exc}")
        say(f"NOT CONVERGED: {str(exc).splitlines()[0]}")
        return 1
    except KeyboardInterrupt:
        say("NOT CONVERGED: interrupted")
        return 1


if __name__ == "__main__":
    sys.exit(main())
