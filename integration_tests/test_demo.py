"""``make demo``: ``examples/demo.py`` end to end in a subprocess, as a user runs it.

The embedded default needs no server (SQLite and kombu's ``filesystem://`` broker) and always
runs; the same demo on RabbitMQ + PostgreSQL and on Redis is skipped when those services are down
(and fails under ``CI=true``).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from integration_tests.harness import (
    PG_HOST,
    PG_PORT,
    RABBIT_HOST,
    RABBIT_PORT,
    REDIS_HOST,
    REDIS_PORT,
    require,
)

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "demo.py"
# The demo's fixed scenario publishes 29 events: 12 + 4 creates, 6 + 1 + 2 updates, 3 + 1 deletes.
EVENTS = 29


def run_demo(workdir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DEMO_")}
    environ.update(env)
    return subprocess.run(
        [sys.executable, str(DEMO), "--workdir", str(workdir)],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=180,
    )


def assert_converged(result: subprocess.CompletedProcess[str]) -> list[str]:
    output = f"stdout:\n{result.stdout[-6000:]}\nstderr:\n{result.stderr[-3000:]}"
    lines = result.stdout.strip().splitlines()
    assert result.returncode == 0, output
    assert lines[-1].startswith(
        "CONVERGED: the replica equals the master field by field (9 products, 3 customers)"
    ), output
    assert sum("-> converged" in line for line in lines) == 3, output  # create, update, delete
    assert "consumer stopped cleanly (exit 0)" in result.stdout, output
    assert not any(line.lstrip().startswith(("DIFF", "ERROR")) for line in lines), output
    return lines


def run_id(result: subprocess.CompletedProcess[str]) -> str:
    match = re.search(r"exchange cqrs_demo_([0-9a-f]+), queue storefront_\1", result.stdout)
    assert match, result.stdout
    return match.group(1)


def test_embedded_default(tmp_path):
    workdir = tmp_path / "demo"
    workdir.mkdir()
    (workdir / ".dj_cqrs_demo").write_text("left by an earlier run\n")
    (workdir / "stale.sqlite3").write_text("an earlier run's database")
    result = run_demo(workdir)
    lines = assert_converged(result)
    assert "kombu filesystem://" in lines[1]
    assert "SQLite" in lines[2]
    # Every event went through the filesystem broker exactly once (kept in processed/).
    processed = list((workdir / "broker" / "processed").glob("*.msg"))
    assert len(processed) == EVENTS, sorted(p.name for p in processed)
    assert list((workdir / "broker" / "messages").iterdir()) == []
    assert not (workdir / "stale.sqlite3").exists()  # each run starts from an empty work dir


def test_refuses_a_work_dir_it_did_not_make(tmp_path):
    (tmp_path / "precious.txt").write_text("not the demo's")
    result = run_demo(tmp_path)
    assert result.returncode == 1
    assert result.stdout.strip().splitlines()[-1].startswith("NOT CONVERGED: ")
    assert "not touching it" in result.stdout
    assert (tmp_path / "precious.txt").read_text() == "not the demo's"


def test_unreachable_broker_is_not_converged(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run_demo(tmp_path / "demo", DEMO_BROKER_URL=f"amqp://guest:secret@127.0.0.1:{port}/%2F")
    assert result.returncode == 1, result.stdout + result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("NOT CONVERGED: cannot reach the broker at amqp://guest:***@127.0.0.1"), last
    assert "secret" not in result.stdout


def test_rabbitmq_and_postgresql(tmp_path):
    require(RABBIT_HOST, RABBIT_PORT, "RabbitMQ")
    require(PG_HOST, PG_PORT, "PostgreSQL")
    result = run_demo(
        tmp_path / "demo",
        DEMO_BROKER_URL=f"amqp://guest:guest@{RABBIT_HOST}:{RABBIT_PORT}/%2F",
        DEMO_DATABASE_URL=f"postgres://postgres@{PG_HOST}:{PG_PORT}/",
    )
    lines = assert_converged(result)
    assert "via RabbitMQTransport" in lines[1] and "PostgreSQL" in lines[2]
    run = run_id(result)
    # The demo dropped its two databases and deleted its queues.
    import pika
    import psycopg2

    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", [f"dj_cqrs_demo_{run}%"])
            assert cur.fetchall() == []
    finally:
        conn.close()
    rabbit = pika.BlockingConnection(pika.ConnectionParameters(RABBIT_HOST, RABBIT_PORT))
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker):
            rabbit.channel().queue_declare(f"storefront_{run}", passive=True)
    finally:
        if rabbit.is_open:
            rabbit.close()


def test_redis_through_kombu(tmp_path):
    require(REDIS_HOST, REDIS_PORT, "Redis")
    result = run_demo(tmp_path / "demo", DEMO_BROKER_URL=f"redis://{REDIS_HOST}:{REDIS_PORT}/0")
    lines = assert_converged(result)
    assert "via KombuTransport" in lines[1]
