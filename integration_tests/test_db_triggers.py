"""CQRS_DB_TRIGGERS: writes that bypass save() reach the replica (PostgreSQL, real broker)."""

from __future__ import annotations

from integration_tests.harness import pg_query, stop_process, wait_until
from integration_tests.test_core_flows import converged
from integration_tests.test_outbox import pending_count, start_consumer


def outbox_rows(fleet, signal="SAVE"):
    return pg_query(
        fleet.master.env["IT_DB_NAME"],
        "SELECT object_pk, revision, data FROM dj_cqrs_outbox WHERE cqrs_id = 'it_gadget' AND signal_type = %s ORDER BY id",
        [signal],
    )


def test_writes_that_bypass_save_reach_the_replica(fleet):
    consumer = start_consumer(fleet)
    fleet.master.env["IT_OUTBOX_GRACE"] = "0"
    relay = fleet.master.start("cqrs_relay", "--interval", "0.2")
    try:
        state = fleet.master.scenario([
            {"op": "create", "model": "gadget", "id": i, "fields": {"name": f"g{i}", "qty": i}} for i in range(1, 7)
        ])
        assert {row["cqrs_revision"] for row in state["it_gadget"].values()} == {0}
        assert len(outbox_rows(fleet)) == 6  # one event per row, although both Python and the trigger saw them
        wait_until(converged(fleet, state), 60, message="creates replicated")

        state = fleet.master.scenario([
            {"op": "qs_update", "model": "gadget", "ids": [1, 2], "fields": {"qty": 100}},
            {"op": "django_bulk_update", "model": "gadget", "items": [{"id": 3, "fields": {"qty": 300}}, {"id": 4, "fields": {"qty": 400}}], "fields": ["qty"]},
            {"op": "sql", "sql": "UPDATE gadgets_gadget SET name = 'raw sql' WHERE id = 5"},
            {"op": "sql", "sql": "DELETE FROM gadgets_gadget WHERE id = 6"},
            {"op": "sql", "sql": "INSERT INTO gadgets_gadget (id, name, qty) VALUES (7, 'raw insert', 7)"},
        ])
        assert state["it_gadget"]["1"]["qty"] == 100 and state["it_gadget"]["1"]["cqrs_revision"] == 1
        assert state["it_gadget"]["5"]["name"] == "raw sql" and state["it_gadget"]["5"]["cqrs_revision"] == 1
        assert "6" not in state["it_gadget"] and state["it_gadget"]["7"]["cqrs_revision"] == 0
        wait_until(converged(fleet, state), 60, message="bypassing writes replicated")

        # Several ORM saves and a raw UPDATE of one row in one transaction: one bump, one event.
        before = len(outbox_rows(fleet))
        state = fleet.master.scenario([{"op": "atomic", "steps": [
            {"op": "update", "model": "gadget", "id": 1, "fields": {"qty": 1}},
            {"op": "update", "model": "gadget", "id": 1, "fields": {"qty": 2}},
            {"op": "sql", "sql": "UPDATE gadgets_gadget SET qty = 3 WHERE id = 1"},
        ]}])
        assert state["it_gadget"]["1"]["cqrs_revision"] == 2
        rows = outbox_rows(fleet)
        assert len(rows) == before + 1
        assert '"previous_data": {"qty": 100}' in rows[-1][2]
        deletes = outbox_rows(fleet, "DELETE")
        assert [(pk, rev) for pk, rev, _ in deletes] == [("6", 1)]
        wait_until(converged(fleet, state), 60, message="replica equals master")
        wait_until(lambda: pending_count(fleet) == 0, 30, message="outbox drained")
    finally:
        stop_process(relay)
        stop_process(consumer)
