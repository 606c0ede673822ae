"""Batched apply over the real RabbitMQ and PostgreSQL: a backlog applied by ``cqrs_consume``.

* two workers on one queue, many revisions per object delivered out of order, duplicates and
  deletes: the replica ends with the newest revision of every object and the deleted ones stay
  deleted;
* poison messages inside a batch: the good ones are applied, only the bad ones are retried and
  dead-lettered, with their reasons;
* a worker killed (SIGKILL) in the middle of a backlog: nothing is lost, the supervisor's new
  worker finishes it (no message was acknowledged before its change was committed).
"""

from __future__ import annotations

import datetime
import json
import os
import random
import signal
import time

import pytest

from integration_tests.failure_helpers import child_pids
from integration_tests.harness import (
    PG_HOST,
    PG_PORT,
    RABBIT_HOST,
    RABBIT_PORT,
    log_text,
    pg_query,
    stop_process,
    wait_until,
)

BASE = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


def _product(pk: int, revision: int, name: str | None = None) -> dict:
    return {
        "id": pk,
        "name": name if name is not None else f"p{pk} r{revision} ☕",
        "description": "batched",
        "price": f"{pk}.{revision:06d}",
        "created_at": None,
        "release_date": None,
        "external_id": None,
        "active": True,
        "category": None,
        "cqrs_revision": revision,
        "cqrs_updated": (BASE + datetime.timedelta(seconds=revision)).isoformat(),
    }


def _body(signal_type: str, data: dict) -> bytes:
    return json.dumps({
        "signal_type": signal_type,
        "cqrs_id": "it_product",
        "instance_data": data,
        "instance_pk": data["id"],
        "previous_data": None,
        "correlation_id": None,
        "expires": None,
        "retries": 0,
    }).encode()


def _publish(exchange: str, bodies: list[bytes]) -> None:
    import pika

    conn = pika.BlockingConnection(pika.ConnectionParameters(RABBIT_HOST, RABBIT_PORT))
    try:
        channel = conn.channel()
        channel.confirm_delivery()
        properties = pika.BasicProperties(content_type="text/plain", delivery_mode=2)
        for body in bodies:
            channel.basic_publish(exchange, "it_product", body, properties, mandatory=True)
    finally:
        conn.close()


def _publish_backlog(fleet, bodies: list[bytes]) -> None:
    """Put ``bodies`` into the (idle) replica queue and wait until it holds every one of them.

    Without a publisher confirm per message (one round trip each: 20,000 of them took about 18 s
    here): the queue's depth says that all arrived, which is what the test needs before it starts.
    """
    import pika

    before = _queue_depth(fleet.queue)
    conn = pika.BlockingConnection(pika.ConnectionParameters(RABBIT_HOST, RABBIT_PORT))
    try:
        channel = conn.channel()
        properties = pika.BasicProperties(content_type="text/plain", delivery_mode=2)
        for body in bodies:
            channel.basic_publish(fleet.exchange, "it_product", body, properties, mandatory=True)
        expected = before + len(bodies)
        wait_until(lambda: channel.queue_declare(fleet.queue, passive=True).method.message_count >= expected,
                   60, interval=0.05, message=f"{len(bodies)} messages in {fleet.queue}")
        assert channel.queue_declare(fleet.queue, passive=True).method.message_count == expected
    finally:
        conn.close()


def _declare_queue(fleet) -> None:
    """Let a consumer declare and bind the replica queue, then stop it: the backlog waits there."""
    from integration_tests.compat.wire import consumer_count

    consumer = fleet.replica.start("cqrs_consume")
    wait_until(lambda: consumer_count(fleet.queue) > 0, 30, message="replica consuming")
    assert stop_process(consumer) == 0, log_text(consumer)


def _rows(fleet) -> dict[int, tuple[str, int]]:
    rows = pg_query(fleet.replica.env["IT_DB_NAME"], "SELECT id, name, cqrs_revision FROM catalog_productref")
    return {pk: (name, revision) for pk, name, revision in rows}


def _queue_depth(name: str) -> int:
    from integration_tests.harness import queue_depth

    return queue_depth(name)


def test_two_workers_apply_an_out_of_order_backlog_to_the_newest_state(fleet):
    _declare_queue(fleet)
    rng = random.Random(6)
    objects, last = range(1, 121), 7
    stream: list[tuple[float, bytes]] = []
    for pk in objects:
        for revision in range(last + 1):
            # Roughly in revision order, with neighbours swapped (out-of-order delivery).
            stream.append((revision + rng.uniform(-1.5, 1.5), _body("SAVE", _product(pk, revision))))
            if rng.random() < 0.15:
                stream.append((revision + rng.uniform(0, 3), _body("SAVE", _product(pk, revision))))  # duplicate
    deleted = set(objects[:15])
    for pk in deleted:
        data = {"id": pk, "cqrs_revision": last + 1, "cqrs_updated": (BASE + datetime.timedelta(seconds=last + 1)).isoformat()}
        stream.append((last - 1.0, _body("DELETE", data)))  # arrives before some of the late SAVEs
    stream.sort(key=lambda item: item[0])
    _publish(fleet.exchange, [body for _, body in stream])

    consumer = fleet.replica.start("cqrs_consume", "-w", "2")
    expected = {pk: (f"p{pk} r{last} ☕", last) for pk in objects if pk not in deleted}
    wait_until(lambda: _queue_depth(fleet.queue) == 0 and _rows(fleet) == expected, 120, interval=0.5,
               message="replica holds the newest revision of every object")
    time.sleep(1.0)  # nothing older lands afterwards
    assert _rows(fleet) == expected
    assert stop_process(consumer) == 0, log_text(consumer)
    assert "Traceback" not in log_text(consumer)


def test_poison_messages_in_a_batch_fail_alone(fleet):
    _declare_queue(fleet)
    bodies = [_body("SAVE", _product(pk, 0)) for pk in range(1, 301)]
    bodies.insert(100, b'{"signal_type": "SAVE", "cqrs_id": "it_product", "instance_data": {')  # not JSON
    bodies.insert(200, _body("SAVE", _product(1000, 0, name="x" * 201)))  # longer than the column
    _publish(fleet.exchange, bodies)

    consumer = fleet.replica.start("cqrs_consume", "-w", "1")
    dead_letters = f"dead_letter_{fleet.queue}"
    wait_until(lambda: len(_rows(fleet)) == 300, 60, message="the 300 good messages applied")
    # The bad row is retried (3 times, 1 s apart in the services' settings), then dead-lettered.
    wait_until(lambda: _queue_depth(dead_letters) == 2, 60, message="two dead letters")
    assert stop_process(consumer) == 0, log_text(consumer)

    import pika

    conn = pika.BlockingConnection(pika.ConnectionParameters(RABBIT_HOST, RABBIT_PORT))
    try:
        channel = conn.channel()
        reasons = []
        for _ in range(2):
            method, properties, _body_ = channel.basic_get(dead_letters, auto_ack=True)
            assert method is not None
            headers = properties.headers or {}
            reasons.append((headers.get("x-cqrs-reason"), headers.get("x-cqrs-failure"), "too long" in str(headers.get("x-cqrs-error"))))
    finally:
        conn.close()
    # The database error is the per-message path's: the default create caught it, logged it and
    # returned None, as django-cqrs does; the failure is recorded as that exception.
    assert sorted(reasons) == [("invalid_json", "invalid_json", False), ("max_retries", "exception", True)]
    assert 1000 not in _rows(fleet)


def test_sigkill_in_the_middle_of_a_backlog_loses_nothing(fleet):
    _declare_queue(fleet)
    total = 20000
    _publish_backlog(fleet, [_body("SAVE", _product(pk, 0)) for pk in range(1, total + 1)])

    consumer = fleet.replica.start("cqrs_consume", "-w", "1")
    wait_until(lambda: len(_rows(fleet)) > 0, 60, interval=0.05, message="the worker started applying")
    workers = child_pids(consumer.pid)
    assert len(workers) == 1, workers
    os.kill(workers[0], signal.SIGKILL)  # mid-backlog; the supervisor starts a new worker
    applied_at_kill = len(_rows(fleet))

    wait_until(lambda: len(_rows(fleet)) == total and _queue_depth(fleet.queue) == 0, 120, interval=0.5,
               message="every message applied after the kill")
    assert stop_process(consumer) == 0, log_text(consumer)
    assert applied_at_kill < total, "the kill came too late to test anything"
    assert pg_query(fleet.replica.env["IT_DB_NAME"], "SELECT count(*), min(cqrs_revision), max(cqrs_revision) FROM catalog_productref") == [(total, 0, 0)]


pytestmark = pytest.mark.usefixtures("rabbitmq", "postgres")
_ = (PG_HOST, PG_PORT)
