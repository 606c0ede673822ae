"""HTTP pull between real processes: the master served by ``manage.py runserver`` (dj_cqrs.urls
under /cqrs/), the replica seeded and kept in sync by ``manage.py cqrs_pull --follow``.

10,000 products are pulled while another process changes, deletes and creates products; a
``cqrs_pull`` SIGKILLed in the middle of the initial pass resumes from its stored cursor (it never
asks for a new snapshot again) and the replica ends equal to the master. A bad token gets 401, a
bad cursor 400. The master publishes through the relay (which does not run here): the feed reads
the outbox rows whether they are published or not, and no broker is needed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from integration_tests.conftest import Fleet, make_fleet
from integration_tests.harness import OUR_PYTHON, log_text, pg_query, stop_process, wait_until

TOKEN = "it-pull-token"
ROWS = 10_000
LIMIT = 100

CREATE = f"""
from decimal import Decimal
from catalog.models import Product
for start in range(1, {ROWS} + 1, 2000):
    # 19-20 significant digits: a float on the way would lose some (the state dumps compare them)
    Product.cqrs.bulk_create([
        Product(id=i, name=f"p{{i}}", price=Decimal(f"{{i}}12345678.123456"))
        for i in range(start, min(start + 2000, {ROWS} + 1))
    ])
print(Product.objects.count())
"""

# Changes while the replica pulls: updates (some twice), deletes, creations behind and ahead of
# the snapshot's position (ids freed by deletes, and new ids), each in its own transaction.
MUTATE = f"""
import random
from django.db import transaction
from catalog.models import Product
rnd = random.Random(14)
for n in range(300):
    pk = rnd.randint(1, {ROWS})
    with transaction.atomic():
        obj = Product.objects.filter(pk=pk).first()
        if obj is None:
            Product.objects.create(id=pk, name=f"reborn {{n}}", price=n)
        elif n % 5 == 0:
            obj.delete()
        else:
            obj.name = f"changed {{n}}"
            obj.price = n
            obj.save()
    if n % 10 == 0:
        Product.objects.create(id={ROWS} + 1 + n, name=f"new {{n}}", price=n)
print("done")
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, token: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def pulled(fleet: Fleet) -> tuple[int, bool] | None:
    rows = pg_query(
        fleet.replica.env["IT_DB_NAME"],
        "SELECT items, caught_up FROM dj_cqrs_pull_cursor WHERE cqrs_id = 'it_product'",
    )
    return (int(rows[0][0]), bool(rows[0][1])) if rows else None


@pytest.fixture
def pull_fleet(postgres: None) -> Iterator[Fleet]:
    yield from make_fleet(
        OUR_PYTHON, OUR_PYTHON, {"IT_HTTP_TOKENS": TOKEN, "IT_OUTBOX_PUBLISH": "relay"}
    )


def test_pull_seeds_a_replica_while_the_master_changes(pull_fleet: Fleet) -> None:
    fleet = pull_fleet
    assert fleet.master.manage("shell", "-c", CREATE).stdout.strip().splitlines()[-1] == str(ROWS)
    port = free_port()
    server = fleet.master.start("runserver", "--noreload", "--skip-checks", f"127.0.0.1:{port}")
    mount = f"http://127.0.0.1:{port}/cqrs/"
    pull_url = f"{mount}pull/it_product/"

    def serving() -> bool:
        try:
            return http_get(f"{pull_url}?limit=1", TOKEN)[0] == 200
        except OSError:
            assert server.poll() is None, log_text(server)
            return False

    wait_until(serving, timeout=30, message="runserver to answer")
    status, body = http_get(pull_url, "wrong-token")
    assert status == 401 and body["error"] == "unauthorized"
    status, body = http_get(f"{pull_url}?after=not-a-cursor", TOKEN)
    assert status == 400 and body["detail"].startswith("bad cursor")

    fleet.replica.env["CQRS_PULL_TOKEN"] = "wrong-token"
    refused = fleet.replica.manage(
        "cqrs_pull", "--url", mount, "--cqrs-id", "it_product", check=False
    )
    assert refused.returncode == 1 and "HTTP 401" in refused.stderr, refused.stderr
    fleet.replica.env["CQRS_PULL_TOKEN"] = TOKEN
    args = (
        "cqrs_pull",
        "--url",
        mount,
        "--cqrs-id",
        "it_product",
        "--follow",
        "--interval",
        "0.2",
        "--limit",
        str(LIMIT),
    )
    first = fleet.replica.start(*args)
    # Killed in the middle of the initial pass.
    wait_until(
        lambda: (pulled(fleet) or (0, False))[0] >= ROWS // 4,
        timeout=60,
        interval=0.02,
        message="a quarter of the snapshot",
    )
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(10)
    at_kill, caught_up = pulled(fleet) or (0, False)
    assert not caught_up and ROWS // 4 <= at_kill < ROWS, at_kill

    mutator = fleet.master.start("shell", "-c", MUTATE)
    second = fleet.replica.start(*args, "--no-progress")
    assert mutator.wait(120) == 0, log_text(mutator)

    def converged() -> bool:
        assert second.poll() is None, log_text(second)
        return fleet.master.state() == fleet.replica.state()

    wait_until(converged, timeout=60, interval=1.0, message="the replica to equal the master")
    assert stop_process(second) == 0, log_text(second)
    items, caught_up = pulled(fleet) or (0, False)
    assert caught_up
    # Resumed, not started over: the restarted pull applied the rest of the snapshot and the
    # changes, far fewer items than a second full snapshot would have been.
    assert items - at_kill < ROWS - at_kill + 1000, (at_kill, items)
    requests = log_text(server)
    fresh = re.findall(r'"GET /cqrs/pull/it_product/\?limit=' + str(LIMIT) + r" HTTP", requests)
    resumed = re.findall(r'"GET /cqrs/pull/it_product/\?after=\S+ HTTP', requests)
    assert len(fresh) == 1, requests[-3000:]  # only the first cqrs_pull started a snapshot
    assert len(resumed) >= ROWS // LIMIT
    summary = log_text(second).strip().splitlines()[-1]
    assert "caught up (stopped)" in summary, summary
    stop_process(server)
