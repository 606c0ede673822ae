"""Webhooks over real HTTP: the master on PostgreSQL, deliveries by a ``cqrs_relay`` subprocess,
subscribers as real processes on 127.0.0.1 (integration_tests/webhook_subscriber.py).

Subscribers: one answering 500 to its first tries, one slow, one down for a while (started
late), one down past the attempts (its changes park as failed, then are replayed). The relay is
SIGKILLed mid-delivery and restarted: nothing is lost, every signature verifies, and per object
the revisions received never go back.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration_tests.harness import (
    OUR_PYTHON,
    ROOT,
    Service,
    log_text,
    pg_database,
    pg_query,
    rabbit_cleanup,
    stop_process,
    unique,
    wait_until,
)

SECRET = "it-webhook-secret"
# Up to 6 tries a change, 0.25 + 0.5 + 1 + 1.5 + 1.5 = 4.75 s of back-off before it is parked.
WEBHOOKS = {
    "attempts": 6,
    "retry_delay": 0.25,
    "max_retry_delay": 1.5,
    "timeout": 2,
    "lease": 3,
    "batch_size": 20,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Subscriber:
    def __init__(self, name: str, tmp: Path, *options: str) -> None:
        self.name = name
        self.port = free_port()
        self.out = tmp / f"{name}.jsonl"
        self.out.touch()
        self.options = options
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/{self.name}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                OUR_PYTHON,
                str(ROOT / "webhook_subscriber.py"),
                "--port",
                str(self.port),
                "--out",
                str(self.out),
                "--secret",
                SECRET,
                *self.options,
            ],
            start_new_session=True,
        )
        wait_until(self._listening, 10, interval=0.05, message=f"subscriber {self.name} listening")

    def _listening(self) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.out.read_text().splitlines() if line.strip()]

    def acknowledged(self) -> list[dict]:
        return [r for r in self.records() if r["status"] == 200]


@pytest.fixture
def master(
    rabbitmq: None, postgres: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Service]:
    monkeypatch.setenv("IT_LOG_DIR", str(tmp_path))  # the relays' logs
    run = unique("itwh")
    exchange = f"cqrs_{run}"
    with pg_database(f"{run}_master") as db:
        service = Service(
            "master",
            OUR_PYTHON,
            {
                "IT_CQRS_EXCHANGE": exchange,
                "IT_DB_NAME": db,
                "IT_WEBHOOKS": json.dumps(WEBHOOKS),
                "IT_LOG_LEVEL": "INFO",
            },
        )
        service.migrate()
        try:
            yield service
        finally:
            service.stop_all()
            rabbit_cleanup(exchange, [])


def product_revisions(master: Service) -> dict[str, int]:
    return {
        str(pk): rev
        for pk, rev in pg_query(
            master.env["IT_DB_NAME"], "SELECT id, cqrs_revision FROM catalog_product"
        )
    }


def tag_revisions(master: Service) -> dict[str, int]:
    return {
        str(pk): rev
        for pk, rev in pg_query(
            master.env["IT_DB_NAME"], "SELECT code, cqrs_revision FROM catalog_tag"
        )
    }


def final_view(records: list[dict]) -> dict[str, int | None]:
    """Per object, the state the subscriber ends with: its last revision, None when deleted."""
    view: dict[str, int | None] = {}
    for record in records:
        body = record["body"]
        key = str(body["instance_pk"])
        view[key] = (
            None if body["signal_type"] == "DELETE" else body["instance_data"]["cqrs_revision"]
        )
    return view


def assert_in_order(records: list[dict]) -> None:
    """Per object, acknowledged deliveries never go back: revisions do not decrease, nothing
    follows a DELETE but copies of it (redeliveries carry the same event id)."""
    last: dict[str, tuple[int, bool, str]] = {}
    for record in records:
        body = record["body"]
        key = str(body["instance_pk"])
        deleted = body["signal_type"] == "DELETE"
        revision = (
            body["instance_data"].get("cqrs_revision", -1) if body.get("instance_data") else -1
        )
        if key in last:
            prev_rev, prev_deleted, prev_id = last[key]
            if prev_deleted:
                assert deleted and record["event_id"] == prev_id, (key, record, last[key])
            else:
                assert deleted or revision >= prev_rev, (key, revision, prev_rev)
        last[key] = (revision, deleted, record["event_id"])


def steps_round(first: int, last: int, delete: range) -> list[dict]:
    steps = [
        {"op": "create", "id": i, "fields": {"name": f"p{i}", "price": "1.5"}}
        for i in range(first, last + 1)
    ]
    for n in range(2):
        steps += [
            {"op": "update", "id": i, "fields": {"name": f"p{i} v{n}"}}
            for i in range(first, last + 1)
        ]
    steps += [{"op": "delete", "id": i} for i in delete]
    return steps


@pytest.fixture
def subscribers() -> Iterator[list[Subscriber]]:
    """The test's subscriber processes, stopped at the end whatever happens."""
    started: list[Subscriber] = []
    yield started
    for sub in started:
        sub.stop()


def test_webhooks_deliver_every_change_in_order_through_failures_and_a_killed_relay(
    master, tmp_path, subscribers
):
    flaky = Subscriber("flaky", tmp_path, "--fail-first", "5")
    slow = Subscriber("slow", tmp_path, "--delay", "0.1")
    late = Subscriber("late", tmp_path)
    dead = Subscriber("dead", tmp_path)
    subscribers.extend([flaky, slow, late, dead])
    for sub in (flaky, slow, late):
        master.manage(
            "cqrs_subscriptions",
            "add",
            sub.name,
            sub.url,
            "--cqrs-id",
            "it_product",
            "--secret",
            SECRET,
        )
    out = master.manage(
        "cqrs_subscriptions", "add", dead.name, dead.url, "--cqrs-id", "it_tag"
    ).stdout
    dead_secret = out.split("Secret (shown once): ")[1].strip()
    assert len(dead_secret) >= 32
    dead.options = ("--secret", dead_secret)  # argparse keeps the last --secret
    flaky.start()
    slow.start()

    relay = master.start("cqrs_relay", "--interval", "0.2", log_name="relay1.log")
    master.scenario(steps_round(1, 20, range(16, 21)))
    time.sleep(1.0)
    late.start()  # down for about 1.5 s since its first change, less than the retries last: nothing parks
    master.scenario(
        [
            {
                "op": "create",
                "model": "tag",
                "id": f"00000000-0000-0000-0000-00000000000{i}",
                "fields": {"label": f"t{i}"},
            }
            for i in (1, 2)
        ]
    )

    # SIGKILL the relay while the slow subscriber is mid-way.
    wait_until(
        lambda: len(slow.acknowledged()) >= 8, 30, interval=0.05, message="slow subscriber half-way"
    )
    assert len(slow.acknowledged()) < 40
    os.killpg(relay.pid, signal.SIGKILL)
    relay.wait(10)
    master.scenario(
        steps_round(21, 25, range(1, 4))
        + [{"op": "update", "id": i, "fields": {"name": f"again {i}"}} for i in range(4, 16)]
    )
    relay = master.start(
        "cqrs_relay", "--interval", "0.2", log_name="relay2.log"
    )  # takes over once the leases expire

    products = product_revisions(master)
    expected = {**{str(i): None for i in range(1, 26)}, **products}
    for sub in (flaky, slow, late):
        wait_until(
            lambda sub=sub: final_view(sub.acknowledged()) == expected,
            45,
            interval=0.25,
            message=f"{sub.name} caught up",
        )

    # The dead subscriber's two changes are parked as failed, visible in `failures`.
    failures = wait_until(
        lambda: [
            r
            for r in json.loads(
                master.manage("cqrs_subscriptions", "failures", "dead", "--json").stdout
            )
            if r["status"] == "failed"
        ][1:]
        and json.loads(master.manage("cqrs_subscriptions", "failures", "dead", "--json").stdout),
        30,
        interval=0.5,
        message="dead subscriber's deliveries parked",
    )
    assert (
        sorted((r["status"], r["cqrs_id"], r["attempts"]) for r in failures)
        == [("failed", "it_tag", 6)] * 2
    ), failures
    assert all("Connection" in r["last_error"] for r in failures)
    dead.start()
    assert "Queued 2" in master.manage("cqrs_subscriptions", "replay", "dead", "--all").stdout
    tags = tag_revisions(master)
    wait_until(
        lambda: final_view(dead.acknowledged()) == tags,
        20,
        interval=0.25,
        message="dead subscriber replayed",
    )
    wait_until(
        lambda: json.loads(master.manage("cqrs_subscriptions", "failures", "--json").stdout) == [],
        10,
        interval=0.5,
    )

    assert stop_process(relay) == 0, log_text(relay)
    listing = {
        r["name"]: r
        for r in json.loads(master.manage("cqrs_subscriptions", "list", "--json").stdout)
    }
    assert all(r["failed"] == r["held"] == r["replay"] == 0 for r in listing.values()), listing

    for sub in (flaky, slow, late, dead):
        records = sub.records()
        assert records and all(r["verified"] for r in records), sub.name
        assert all(
            r["method"] == "PUT" and r["content_type"] == "application/json" for r in records
        )
        assert_in_order(sub.acknowledged())
    assert [r["status"] for r in flaky.records()[:6]] == [500] * 5 + [200]
    # At least once: a change sent again carries the same event id and the same state (receivers
    # dedupe on the id). Which intermediate states a subscriber gets depends on when it reads (a
    # SAVE is served with the current state); the final state is the same for all (above).
    states: dict[str, tuple] = {}
    for sub in (flaky, slow, late):
        for record in sub.acknowledged():
            state = (record["body"]["signal_type"], record["body"]["instance_data"])
            assert states.setdefault(record["event_id"], state) == state
