"""Master → RabbitMQ → replica, over the real broker and PostgreSQL, both services on dj_cqrs."""

from __future__ import annotations

import pytest

from integration_tests.harness import log_text, stop_process, wait_until

PRODUCT = {
    "name": "Kaffee ☕ 1/2",
    "description": "Grüße / \"quoted\" \\ back\nslash",
    "price": "12345678901234.123456",
    "created_at": "2026-11-22T08:27:56.123456+00:00",
    "release_date": "2024-01-02",
    "external_id": "00000000-0000-0000-0000-000000000005",
    "active": True,
    "category": 3,
}


def converged(fleet, expected=None):
    def check():
        master = expected if expected is not None else fleet.master.state()
        replica = fleet.replica.state()
        return replica == master and replica

    return check


def test_create_update_delete_sync_with_two_workers(fleet):
    consumer = fleet.replica.start("cqrs_consume", "-w", "2")
    # The queue exists once a worker has declared it; messages published before that are unroutable.
    wait_until(lambda: _queue_exists(fleet.queue), 30, message="replica consuming")

    steps = [{"op": "create", "id": i, "fields": dict(PRODUCT, name=f"p{i} ☕/")} for i in range(1, 21)]
    steps += [{"op": "update", "id": i, "fields": {"price": f"{i}.000001", "active": False}} for i in range(1, 11)]
    steps += [{"op": "delete", "id": i} for i in range(15, 18)]
    steps += [
        {"op": "atomic", "steps": [
            {"op": "update", "id": 1, "fields": {"name": "one"}},
            {"op": "update", "id": 1, "fields": {"description": "twice in one transaction"}},
        ]},
        {"op": "bulk_create", "items": [{"id": 100 + i, "fields": {"name": f"bulk {i}"}} for i in range(5)]},
        {"op": "bulk_update", "ids": [100, 101], "fields": {"name": "bulk updated"}},
        {"op": "create", "model": "tag", "id": "0b0c3f5e-1d4a-4f57-9a52-1f0b3c6b8a10", "fields": {"label": "uuid pk"}},
        {"op": "delete", "model": "tag", "id": "0b0c3f5e-1d4a-4f57-9a52-1f0b3c6b8a10"},
        {"op": "create", "model": "tag", "id": "1b0c3f5e-1d4a-4f57-9a52-1f0b3c6b8a10", "fields": {"label": "kept"}},
    ]
    master_state = fleet.master.scenario(steps)
    assert master_state["it_product"]["1"]["cqrs_revision"] == 2  # create 0, update 1, one bump for the atomic block
    assert len(master_state["it_product"]) == 17 + 5
    wait_until(converged(fleet, master_state), 60, message="replica equals master")

    # cqrs_sync repairs a replica row changed behind its back (broadcast and direct).
    fleet.replica.manage("shell", "-c", "from catalog.models import ProductRef; ProductRef.objects.filter(pk__in=[2, 3]).update(name='drift', cqrs_revision=99)")
    fleet.master.scenario([{"op": "sync", "id": 2}, {"op": "sync", "id": 3, "queue": fleet.queue}])
    wait_until(converged(fleet, master_state), 60, message="sync repaired drift")

    assert stop_process(consumer) == 0, log_text(consumer)


def test_consumer_restart_keeps_messages(fleet):
    consumer = fleet.replica.start("cqrs_consume")
    wait_until(lambda: _queue_exists(fleet.queue), 30, message="replica consuming")
    stop_process(consumer)
    state = fleet.master.scenario([{"op": "create", "id": i, "fields": {"name": f"while down {i}"}} for i in range(1, 31)])
    consumer = fleet.replica.start("cqrs_consume", "-w", "2")
    wait_until(converged(fleet, state), 60, message="replica caught up after restart")
    stop_process(consumer)


def _queue_exists(queue: str) -> bool:
    """Ready to receive: a replica consumes only after it has declared *and bound* its queue
    (a queue can exist before its bindings do, and messages published then are unroutable)."""
    from integration_tests.compat.wire import consumer_count

    return consumer_count(queue) > 0
