"""Helpers for integration tests: real services, real processes.

Each test gets its own PostgreSQL databases, its own exchange and queue names, so tests (and test
runs in other checkouts on the same machine) never see each other's messages.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

ROOT = Path(__file__).resolve().parent
SERVICES = ROOT / "services"
RABBIT_HOST = os.environ.get("IT_RABBIT_HOST", "127.0.0.1")
RABBIT_PORT = int(os.environ.get("IT_RABBIT_PORT", "5672"))
PG_HOST = os.environ.get("IT_DB_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("IT_DB_PORT", "5432"))
RABBIT_MGMT_PORT = int(os.environ.get("IT_RABBIT_MGMT_PORT", "15672"))
REDIS_HOST = os.environ.get("IT_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("IT_REDIS_PORT", "6379"))


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(host: str, port: int, name: str) -> None:
    """Skip when a service is down on a laptop; fail under CI=true."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError as exc:
        message = f"{name} is not reachable on {host}:{port} ({exc})"
        if in_ci():
            pytest.fail(message + " - CI=true requires it", pytrace=False)
        pytest.skip(message)


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@contextlib.contextmanager
def pg_database(name: str) -> Iterator[str]:
    import psycopg2

    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
            cur.execute(f'CREATE DATABASE "{name}"')
        yield name
    finally:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                [name],
            )
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.close()


#: Migrated template databases of this session: (python as given, role, schema environment) -> name.
_TEMPLATES: dict[tuple[str, str, tuple[tuple[str, str], ...]], str] = {}

#: Environment variables that only name a test's own database, exchange, queue or key prefix: they
#: do not change what ``migrate`` creates, so databases that differ only in them share a template.
_PER_TEST_ENV = frozenset({"IT_DB_NAME", "IT_CQRS_EXCHANGE", "IT_CQRS_QUEUE", "IT_TRANSPORT_OPTIONS", "IT_LOG_DIR"})


def _schema_env(env: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in env.items() if k.startswith("IT_") and k not in _PER_TEST_ENV))


def _pg_admin(*statements: str) -> None:
    import psycopg2

    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()


def _pg_is_empty(name: str) -> bool:
    """True when ``name`` has no table or sequence of its own yet (a database just created)."""
    rows = pg_query(
        name,
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'",
    )
    return int(rows[0][0]) == 0


def drop_templates() -> None:
    """Drop this session's template databases (at the end of the session)."""
    while _TEMPLATES:
        _key, name = _TEMPLATES.popitem()
        with contextlib.suppress(Exception):
            _pg_admin(f'DROP DATABASE IF EXISTS "{name}"')


def rabbit_cleanup(exchange: str, queue_prefixes: list[str]) -> None:
    """Delete a test's exchange and every queue whose name starts with one of the prefixes."""
    import pika

    try:
        conn = pika.BlockingConnection(pika.ConnectionParameters(RABBIT_HOST, RABBIT_PORT))
    except Exception:  # noqa: BLE001 - best-effort cleanup
        return
    try:
        channel = conn.channel()
        for name in _list_queues(queue_prefixes):
            with contextlib.suppress(Exception):
                channel.queue_delete(name)
        with contextlib.suppress(Exception):
            channel.exchange_delete(exchange)
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def _queue_names() -> list[str] | None:
    """Every queue of the vhost: from the management API when it answers (a few ms), else from
    ``rabbitmqctl`` (an Erlang VM start, about a second); None when neither does."""
    import base64
    import urllib.request

    request = urllib.request.Request(
        f"http://{RABBIT_HOST}:{RABBIT_MGMT_PORT}/api/queues/%2F?columns=name",
        headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return [str(queue["name"]) for queue in json.loads(response.read())]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        out = subprocess.run(
            ["rabbitmqctl", "list_queues", "-q", "name"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return [line.strip() for line in out.splitlines() if line.strip()]


def _list_queues(prefixes: list[str]) -> list[str]:
    names = _queue_names()
    if names is None:
        return list(prefixes)
    return [n for n in names if any(n == p or n.startswith(p + ".") or n.startswith(p + "_") or n == f"dead_letter_{p}" for p in prefixes)] or list(prefixes)


def queue_depth(queue: str) -> int:
    import pika

    conn = pika.BlockingConnection(pika.ConnectionParameters(RABBIT_HOST, RABBIT_PORT))
    try:
        return int(conn.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        conn.close()


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2, message: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message or predicate}: last={last!r}")


class Service:
    """One Django service (master or replica) run as subprocesses with a given Python."""

    def __init__(self, role: str, python: str, env: dict[str, str]) -> None:
        self.role = role
        self.python = python
        self.dir = SERVICES / role
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        # The service must import *its* dj_cqrs (ours or django-cqrs), never the checkout by path.
        self.env.pop("PYTHONPATH", None)
        self.env.pop("DJANGO_SETTINGS_MODULE", None)
        self.processes: list[subprocess.Popen[bytes]] = []

    def manage(self, *args: str, input: str | None = None, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.python, "manage.py", *args],
            cwd=self.dir,
            env=self.env,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{self.role} manage.py {' '.join(args)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
            )
        return result

    def migrate(self) -> None:
        """Bring this service's database to its migrated state.

        A fresh, empty PostgreSQL database (as ``pg_database`` creates it) becomes a copy of a
        template that ``migrate`` built once per session for the same service, interpreter and
        settings environment (``CREATE DATABASE ... TEMPLATE`` copies files, where ``migrate``
        costs a Django process and every migration: about 1-3 s per database). Anything else
        (SQLite, a database that already holds tables) runs ``migrate`` itself.
        """
        name = self.env.get("IT_DB_NAME", "")
        if self.env.get("IT_DB_ENGINE", "postgresql") != "postgresql" or not name or not _pg_is_empty(name):
            self.manage("migrate", "-v", "0")
            return
        # abspath, not realpath: every virtualenv's python links to the same interpreter binary.
        key = (os.path.abspath(self.python), self.role, _schema_env(self.env))
        template = _TEMPLATES.get(key)
        if template is None:
            template = f"it_tpl_{os.getpid()}_{uuid.uuid4().hex[:10]}"
            _pg_admin(f'CREATE DATABASE "{template}"')
            _TEMPLATES[key] = template
            builder = Service(self.role, self.python, {**self.env, "IT_DB_NAME": template})
            try:
                builder.manage("migrate", "-v", "0")
            except BaseException:
                del _TEMPLATES[key]
                _pg_admin(f'DROP DATABASE IF EXISTS "{template}"')
                raise
        _pg_admin(f'DROP DATABASE "{name}"', f'CREATE DATABASE "{name}" TEMPLATE "{template}"')

    def state(self) -> dict[str, Any]:
        return json.loads(self.manage("it_state").stdout)  # type: ignore[no-any-return]

    def scenario(self, steps: list[dict[str, Any]]) -> dict[str, Any]:
        return json.loads(self.manage("it_scenario", input=json.dumps(steps)).stdout)  # type: ignore[no-any-return]

    def start(self, *args: str, log_name: str | None = None) -> subprocess.Popen[bytes]:
        log_path = Path(os.environ.get("IT_LOG_DIR", "/tmp")) / (log_name or f"dj_cqrs_{self.role}_{uuid.uuid4().hex[:6]}.log")
        log = open(log_path, "wb")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            [self.python, "manage.py", *args],
            cwd=self.dir,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        process.log_path = log_path  # type: ignore[attr-defined]
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.processes:
            stop_process(process)
        self.processes.clear()


def stop_process(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    return process.returncode


def log_text(process: Any) -> str:
    try:
        return Path(process.log_path).read_text(errors="replace")
    except OSError:
        return ""


OUR_PYTHON = sys.executable


def pg_query(dbname: str, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    import psycopg2

    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname=dbname)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params or [])
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


class CaptureQueue:
    """A durable queue bound to the test exchange that records every message published."""

    def __init__(self, exchange: str, routing_keys: list[str], name: str | None = None) -> None:
        import pika

        self.name = name or unique("capture")
        self.conn = pika.BlockingConnection(pika.ConnectionParameters(RABBIT_HOST, RABBIT_PORT))
        self.channel = self.conn.channel()
        self.channel.exchange_declare(exchange, exchange_type="topic", durable=True)
        self.channel.queue_declare(self.name, durable=False, auto_delete=False)
        for key in routing_keys:
            self.channel.queue_bind(self.name, exchange, routing_key=key)

    def count(self) -> int:
        return int(self.channel.queue_declare(self.name, passive=True).method.message_count)

    def drain(self) -> list[tuple[str, bytes]]:
        messages = []
        while True:
            method, _props, body = self.channel.basic_get(self.name, auto_ack=True)
            if method is None:
                return messages
            messages.append((method.routing_key, body))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.channel.queue_delete(self.name)
        with contextlib.suppress(Exception):
            self.conn.close()


def publish_raw(exchange: str, routing_key: str, body: bytes) -> None:
    import pika

    conn = pika.BlockingConnection(pika.ConnectionParameters(RABBIT_HOST, RABBIT_PORT))
    try:
        channel = conn.channel()
        channel.confirm_delivery()
        channel.basic_publish(exchange, routing_key, body, pika.BasicProperties(content_type="text/plain", delivery_mode=2))
    finally:
        conn.close()
