"""Zero-loss delivery over the real broker and PostgreSQL: outbox, relay, tombstones."""

from __future__ import annotations

import json
import re
import time

from integration_tests.harness import (
    CaptureQueue,
    log_text,
    pg_query,
    publish_raw,
    stop_process,
    wait_until,
)
from integration_tests.test_core_flows import _queue_exists, converged

CLOSED_PORT_URL = "amqp://guest:guest@127.0.0.1:1/%2F"


def pending_count(fleet) -> int:
    return pg_query(fleet.master.env["IT_DB_NAME"], "SELECT count(*) FROM dj_cqrs_outbox WHERE published_at IS NULL")[0][0]


def start_consumer(fleet, *args):
    consumer = fleet.replica.start("cqrs_consume", *args)
    wait_until(lambda: _queue_exists(fleet.queue), 30, message="replica consuming")
    return consumer


def test_broker_unreachable_during_2000_changes_then_relay_delivers_everything(fleet):
    consumer = start_consumer(fleet, "-w", "2")
    fleet.master.env.update(IT_MASTER_CQRS_URL=CLOSED_PORT_URL, IT_PUBLISH_RETRIES="1")
    steps = [{"op": "create", "id": i, "fields": {"name": f"p{i}", "price": f"{i}.5"}} for i in range(1, 801)]
    steps += [{"op": "update", "id": i, "fields": {"name": f"updated {i}"}} for i in range(1, 801)]
    steps += [{"op": "delete", "id": i} for i in range(401, 801)]
    state = fleet.master.scenario(steps)  # every commit succeeds although no event can be published
    assert len(state["it_product"]) == 400
    assert pending_count(fleet) == 2000
    # Attempts are counted on the events the publisher tried (after a failure it pauses and leaves
    # the others to the outbox: see the dispatcher's circuit breaker).
    attempts = pg_query(fleet.master.env["IT_DB_NAME"], "SELECT max(attempts), max(last_error) FROM dj_cqrs_outbox")[0]
    assert attempts[0] >= 1 and "Connection" in attempts[1]
    assert fleet.replica.state()["it_product"] == {}

    del fleet.master.env["IT_MASTER_CQRS_URL"]
    fleet.master.env["IT_OUTBOX_GRACE"] = "0"
    out = fleet.master.manage("cqrs_relay", "--once")
    assert "Published" in out.stderr
    assert pending_count(fleet) == 0
    wait_until(converged(fleet, state), 90, message="replica equals master after the relay")
    stop_process(consumer)


def test_master_killed_between_commit_and_publish_relay_delivers(fleet):
    consumer = start_consumer(fleet)
    fleet.master.scenario([{"op": "create", "id": 1, "fields": {"name": "before"}}])
    wait_until(lambda: fleet.replica.state()["it_product"].get("1", {}).get("name") == "before", 30)
    result = fleet.master.manage(
        "it_scenario",
        input=json.dumps([{"op": "crash_after_commit", "steps": [{"op": "update", "id": 1, "fields": {"name": "after crash"}}]}]),
        check=False,
    )
    assert result.returncode == -9, result
    assert fleet.master.state()["it_product"]["1"]["name"] == "after crash"  # committed
    assert pending_count(fleet) == 1
    time.sleep(1)
    assert fleet.replica.state()["it_product"]["1"]["name"] == "before"  # the event never left
    fleet.master.env["IT_OUTBOX_GRACE"] = "0"
    relay = fleet.master.start("cqrs_relay", "--interval", "0.2")
    wait_until(lambda: fleet.replica.state()["it_product"]["1"]["name"] == "after crash", 30)
    assert stop_process(relay) == 0, log_text(relay)
    assert pending_count(fleet) == 0
    stop_process(consumer)


def test_two_relays_racing_over_10000_events_publish_each_once(fleet):
    capture = CaptureQueue(fleet.exchange, ["it_product"])
    try:
        fleet.master.env.update(IT_OUTBOX_PUBLISH="relay", IT_OUTBOX_GRACE="0", IT_LOG_LEVEL="INFO")
        # Ten bulk_create transactions of 1,000 rows each, in one master process.
        fleet.master.scenario([{"op": "bulk_create", "items": [{"id": chunk * 1000 + i, "fields": {"name": f"n{i}"}} for i in range(1000)]} for chunk in range(10)])
        assert pending_count(fleet) == 10000
        relays = [fleet.master.start("cqrs_relay", "--batch", "200", "--interval", "0.2") for _ in range(2)]
        wait_until(lambda: pending_count(fleet) == 0, 180, interval=0.5, message="outbox drained")
        for relay in relays:
            assert stop_process(relay) == 0, log_text(relay)
        wait_until(lambda: capture.count() >= 10000, 30)
        messages = capture.drain()
        pks = [json.loads(body)["instance_pk"] for _rk, body in messages]
        assert len(pks) == 10000
        assert len(set(pks)) == 10000
        counts = [int(re.search(r"relay stopped after publishing (\d+) event", log_text(r)).group(1)) for r in relays]
        assert sum(counts) == 10000 and all(counts), counts  # both relays took part, none published twice
    finally:
        capture.close()


def test_late_save_after_delete_and_recreation_with_the_same_pk(fleet):
    capture = CaptureQueue(fleet.exchange, ["it_product"])
    consumer = start_consumer(fleet)
    try:
        fleet.master.scenario([
            {"op": "create", "id": 7, "fields": {"name": "v0"}},
            {"op": "update", "id": 7, "fields": {"name": "v1"}},
        ])
        wait_until(lambda: fleet.replica.state()["it_product"].get("7", {}).get("name") == "v1", 30)
        fleet.master.scenario([{"op": "delete", "id": 7}])
        wait_until(lambda: "7" not in fleet.replica.state()["it_product"], 30)
        wait_until(lambda: capture.count() >= 3, 30)
        bodies = [json.loads(b) for _rk, b in capture.drain()]
        late_save = next(b for b in bodies if b["signal_type"] == "SAVE" and b["instance_data"]["cqrs_revision"] == 1)
        delete = next(b for b in bodies if b["signal_type"] == "DELETE")

        # A SAVE delivered after the DELETE does not resurrect the row.
        publish_raw(fleet.exchange, "it_product", json.dumps(late_save).encode())
        wait_until(lambda: "CQRS object was deleted" in log_text(consumer) or "ignored" in log_text(consumer), 30)
        time.sleep(0.5)
        assert "7" not in fleet.replica.state()["it_product"]
        stones = pg_query(fleet.replica.env["IT_DB_NAME"], "SELECT object_pk, revision FROM dj_cqrs_tombstone")
        assert stones == [("7", 2)]

        # Re-created with the same pk: revisions continue, the replica has the new object...
        state = fleet.master.scenario([{"op": "create", "id": 7, "fields": {"name": "reborn"}}])
        assert state["it_product"]["7"]["cqrs_revision"] == 3
        wait_until(converged(fleet, state), 30, message="re-created object replicated")
        # ...and a late duplicate of the old DELETE does not remove it.
        publish_raw(fleet.exchange, "it_product", json.dumps(delete).encode())
        time.sleep(1.5)
        assert fleet.replica.state() == fleet.master.state()
    finally:
        stop_process(consumer)
        capture.close()


def test_out_of_order_delivery_with_two_workers_converges(fleet):
    consumer = start_consumer(fleet, "-w", "2")
    steps = []
    for i in range(1, 41):
        steps += [
            {"op": "create", "id": i, "fields": {"name": "a"}},
            {"op": "update", "id": i, "fields": {"name": "b"}},
            {"op": "delete", "id": i},
        ]
        if i % 2 == 0:
            steps.append({"op": "create", "id": i, "fields": {"name": "again"}})
    state = fleet.master.scenario(steps)
    from integration_tests.compat.flows import wait_converged

    wait_converged(fleet.replica, state, 60, "replica equals master")
    stop_process(consumer)
