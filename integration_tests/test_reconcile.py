"""Reconciliation over PostgreSQL and the real broker, with shell pipes between the two services.

* drift repair: rows changed, deleted and added behind the replica's back are repaired by
  ``cqrs_diff_master | cqrs_diff_replica | cqrs_diff_sync`` and
  ``cqrs_deleted_diff_replica | cqrs_deleted_diff_master | cqrs_deleted_sync_replica``, for an
  integer key and for a UUID key named ``code``;
* ``cqrs_bulk_dump -o - | cqrs_bulk_load -i -`` reproduces the master on an empty replica;
* mixed fleet: django-cqrs 3.1.0 on one side, dj_cqrs on the other, for both pipelines and dumps.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from integration_tests.conftest import Fleet, make_fleet
from integration_tests.harness import OUR_PYTHON, in_ci, log_text, stop_process, wait_until

PRODUCT = {
    "name": "Kaffee ☕ 1/2",
    "description": "Grüße / \"quoted\" \\ back\nslash",
    "price": "12345678901234.123456",
    "created_at": "2026-11-22T08:27:56.123456+00:00",
    "release_date": "2024-01-02",
    "external_id": "00000000-0000-0000-0000-000000000005",
    "active": True,
}
TAGS = [str(uuid.UUID(int=i * 7919 + 11)) for i in range(1, 9)]


def command(service: Any, *args: str) -> str:
    """A shell command line running ``manage.py args`` of ``service`` (for pipes)."""
    quoted = " ".join(shlex.quote(a) for a in args)
    return (
        f"(cd {shlex.quote(str(service.dir))} && env IT_DB_NAME={shlex.quote(service.env['IT_DB_NAME'])}"
        f" {shlex.quote(service.python)} manage.py {quoted})"
    )


def pipe(fleet: Fleet, *stages: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        " | ".join(stages),
        shell=True,
        executable="/bin/bash",
        env={**fleet.master.env, "SHELLOPTS": "pipefail"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, f"pipe failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def drift_pipeline(fleet: Fleet, cqrs_id: str, batch: str = "4") -> subprocess.CompletedProcess[str]:
    return pipe(
        fleet,
        command(fleet.master, "cqrs_diff_master", "--cqrs-id", cqrs_id, "--batch", batch),
        command(fleet.replica, "cqrs_diff_replica"),
        command(fleet.master, "cqrs_diff_sync", "--batch", batch),
    )


def deleted_pipeline(fleet: Fleet, cqrs_id: str, batch: str = "4") -> subprocess.CompletedProcess[str]:
    return pipe(
        fleet,
        command(fleet.replica, "cqrs_deleted_diff_replica", "--cqrs-id", cqrs_id, "--batch", batch),
        command(fleet.master, "cqrs_deleted_diff_master"),
        command(fleet.replica, "cqrs_deleted_sync_replica"),
    )


def shell(service: Any, code: str) -> str:
    """Run Python in the service; return the last line it printed."""
    lines = str(service.manage("shell", "-c", code).stdout).strip().splitlines()
    return lines[-1] if lines else ""


def converged(fleet: Fleet) -> Any:
    def check() -> Any:
        master, replica = fleet.master.state(), fleet.replica.state()
        return master == replica and master

    return check


def queue_exists(queue: str) -> bool:
    import pika

    from integration_tests.harness import RABBIT_HOST, RABBIT_PORT

    conn = pika.BlockingConnection(pika.ConnectionParameters(RABBIT_HOST, RABBIT_PORT))
    try:
        conn.channel().queue_declare(queue, passive=True)
        return True
    except Exception:  # noqa: BLE001 - ChannelClosedByBroker when it does not exist
        return False
    finally:
        if conn.is_open:
            conn.close()


def start_consumer(fleet: Fleet) -> Any:
    consumer = fleet.replica.start("cqrs_consume")
    wait_until(lambda: queue_exists(fleet.queue), 60, message="replica queue declared")
    return consumer


def seed(fleet: Fleet, products: int = 12, tags: bool = True, price: str = PRODUCT["price"]) -> None:
    steps: list[dict[str, Any]] = [
        {"op": "create", "id": i, "fields": dict(PRODUCT, name=f"p{i} ☕/", category=i % 3 or None, price=price)}
        for i in range(1, products + 1)
    ]
    if tags:
        steps += [{"op": "create", "model": "tag", "id": code, "fields": {"label": f"tag ü {n}"}} for n, code in enumerate(TAGS)]
    fleet.master.scenario(steps)


def make_drift(fleet: Fleet, tags: bool = True) -> None:
    """Change, delete and add rows behind the replica's back, and change master rows silently."""
    replica_code = (
        "from catalog.models import ProductRef\n"
        "from django.utils import timezone\n"
        "ProductRef.objects.filter(pk__in=[2, 3]).update(name='drift', cqrs_revision=40)\n"
        "ProductRef.objects.filter(pk__in=[5, 9]).delete()\n"
        "ProductRef.objects.create(id=500, name='ghost', cqrs_revision=0, cqrs_updated=timezone.now())\n"
    )
    master_code = (
        "from catalog.models import Product\n"
        "from django.db.models import F\n"
        "Product.objects.filter(pk=7).update(name='changed without an event', cqrs_revision=F('cqrs_revision') + 1)\n"
    )
    if tags:
        replica_code += (
            "from catalog.models import TagRef\n"
            f"TagRef.objects.filter(pk='{TAGS[0]}').update(label='drift', cqrs_revision=3)\n"
            f"TagRef.objects.filter(pk='{TAGS[1]}').delete()\n"
            f"TagRef.objects.create(code='{uuid.UUID(int=1)}', label='ghost', cqrs_revision=0, cqrs_updated=timezone.now())\n"
        )
        master_code += (
            "from catalog.models import Tag\n"
            f"Tag.objects.filter(pk='{TAGS[2]}').update(label='silent', cqrs_revision=F('cqrs_revision') + 1)\n"
        )
    shell(fleet.replica, replica_code)
    shell(fleet.master, master_code)


# -- dj_cqrs on both sides ---------------------------------------------------------------------------


def test_drift_repaired_by_both_pipelines(fleet):
    consumer = start_consumer(fleet)
    seed(fleet)
    wait_until(converged(fleet), 60, message="initial replication")
    make_drift(fleet)
    assert fleet.master.state() != fleet.replica.state()

    product = drift_pipeline(fleet, "it_product")
    assert "5 instance(s) synced." in product.stdout, product.stdout  # 2, 3, 5, 7, 9
    tag = drift_pipeline(fleet, "it_tag", batch="3")
    assert "3 instance(s) synced." in tag.stdout, tag.stdout
    deleted = deleted_pipeline(fleet, "it_product")
    assert "1 instance(s) deleted." in deleted.stderr
    deleted = deleted_pipeline(fleet, "it_tag", batch="3")
    assert "PK to delete: ['00000000-0000-0000-0000-000000000001']" in deleted.stderr
    wait_until(converged(fleet), 60, message="replica equals master after both pipelines")
    state = fleet.replica.state()
    assert state["it_product"]["7"]["name"] == "changed without an event"
    assert "500" not in state["it_product"] and str(uuid.UUID(int=1)) not in state["it_tag"]
    # nothing left to repair
    again = pipe(
        fleet,
        command(fleet.master, "cqrs_diff_master", "--cqrs-id", "it_product"),
        command(fleet.replica, "cqrs_diff_replica"),
    )
    assert len(again.stdout.splitlines()) == 1  # just the header: no differences
    assert stop_process(consumer) == 0, log_text(consumer)


def test_dump_piped_into_load_equals_master(fleet):
    seed(fleet, products=25)
    fleet.master.scenario([{"op": "update", "id": i, "fields": {"price": f"{i}.000001"}} for i in range(1, 6)])
    result = pipe(
        fleet,
        command(fleet.master, "cqrs_bulk_dump", "--cqrs-id", "it_product", "--output", "-", "--batch", "7"),
        command(fleet.replica, "cqrs_bulk_load", "--input", "-", "--batch", "6"),
    )
    assert "25 instance(s) loaded." in result.stderr
    result = pipe(
        fleet,
        command(fleet.master, "cqrs_bulk_dump", "-c", "it_tag", "-o", "-", "-b", "3"),
        command(fleet.replica, "cqrs_bulk_load", "-i", "-"),
    )
    assert "8 instance(s) loaded." in result.stderr
    assert fleet.replica.state() == fleet.master.state()
    updated = "from catalog.models import {m}; import json; print(json.dumps({{str(o.pk): o.cqrs_updated.isoformat() for o in {m}.objects.all()}}))"
    assert json.loads(shell(fleet.replica, updated.format(m="ProductRef"))) == json.loads(shell(fleet.master, updated.format(m="Product")))
    # loading the same dump again changes nothing: same revisions are skipped
    again = pipe(
        fleet,
        command(fleet.master, "cqrs_bulk_dump", "-c", "it_product", "-o", "-"),
        command(fleet.replica, "cqrs_bulk_load", "-i", "-", "--clear=False"),
    )
    assert "0 instance(s) loaded." in again.stderr and "25 instance(s) skipped" in again.stderr


def test_bad_dump_lines_on_postgres(fleet, tmp_path):
    good = '{"id":%d,"name":"ok ☕ %d","description":"","active":true,"cqrs_revision":0,"cqrs_updated":"2026-01-01 00:00:00+00:00"}'
    lines = ["it_product"] + [good % (i, i) for i in range(1, 8)]
    lines[2] = "{broken"  # line 3
    lines[4] = (good % (4, 4)).replace('"ok ☕ 4"', '"%s"' % ("x" * 300))  # too long for the column
    lines[6] = (good % (6, 6)).replace('"active":true', '"active":true,"release_date":"never"')
    lines.append("")  # line 9: empty
    path = tmp_path / "bad.dump"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = fleet.replica.manage("cqrs_bulk_load", "-i", str(path), "-b", "3", check=False)
    assert result.returncode == 3, result.stderr
    errors = [line.split(":")[0] for line in result.stderr.splitlines() if line.startswith("line ")]
    assert errors == ["line 3", "line 5", "line 7", "line 9"], result.stderr
    assert "line 5: database error" in result.stderr
    assert "4 instance(s) loaded." in result.stderr and "4 line(s) failed." in result.stderr
    ids = shell(fleet.replica, "from catalog.models import ProductRef; print(sorted(ProductRef.objects.values_list('id', flat=True)))")
    assert ids == "[1, 3, 5, 7]"


# -- mixed fleet: django-cqrs 3.1.0 on one side ------------------------------------------------------


@pytest.fixture(scope="session")
def theirs_python(compat_python: str) -> str:
    return compat_python


@pytest.fixture
def theirs_master(rabbitmq, postgres, theirs_python) -> Iterator[Fleet]:
    yield from make_fleet(theirs_python, OUR_PYTHON)


@pytest.fixture
def theirs_replica(rabbitmq, postgres, theirs_python) -> Iterator[Fleet]:
    yield from make_fleet(OUR_PYTHON, theirs_python)


@pytest.mark.compat
def test_their_diff_master_into_our_diff_replica(theirs_master):
    fleet = theirs_master
    consumer = start_consumer(fleet)
    seed(fleet, tags=False, price="1234.5")  # django-cqrs sends decimals as floats: keep them short
    wait_until(converged(fleet), 60, message="initial replication")
    make_drift(fleet, tags=False)
    # their master stream, our replica diff, their sync
    drift_pipeline(fleet, "it_product")
    # our replica keys, their master check, our delete
    deleted_pipeline(fleet, "it_product")
    wait_until(converged(fleet), 60, message="replica equals master")
    # their dump into our load
    shell(fleet.replica, "from catalog.models import ProductRef; ProductRef.objects.all().delete()")
    result = pipe(
        fleet,
        command(fleet.master, "cqrs_bulk_dump", "-c", "it_product", "-o", "-"),
        command(fleet.replica, "cqrs_bulk_load", "-i", "-"),
    )
    assert "line " not in result.stderr
    assert fleet.replica.state() == fleet.master.state()
    stop_process(consumer)


@pytest.mark.compat
def test_our_diff_master_into_their_diff_replica(theirs_replica):
    fleet = theirs_replica
    consumer = start_consumer(fleet)
    seed(fleet, tags=False, price="1234.5")  # django-cqrs reads decimals as floats: keep them short
    wait_until(converged(fleet), 60, message="initial replication")
    make_drift(fleet, tags=False)
    drift_pipeline(fleet, "it_product")
    deleted_pipeline(fleet, "it_product")
    wait_until(converged(fleet), 60, message="replica equals master")
    # our dump into their load
    shell(fleet.replica, "from catalog.models import ProductRef; ProductRef.objects.all().delete()")
    pipe(
        fleet,
        command(fleet.master, "cqrs_bulk_dump", "-c", "it_product", "-o", "-"),
        command(fleet.replica, "cqrs_bulk_load", "-i", "-"),
    )
    assert fleet.replica.state() == fleet.master.state()
    stop_process(consumer)
