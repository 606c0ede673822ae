"""Domain events in a mixed fleet, over the real RabbitMQ and PostgreSQL (issue 13).

Our master emits domain events (``dj_cqrs.events.emit``) on the exchange it publishes model
events on, some in the transactions of model changes. A django-cqrs 3.1.0 replica bound there
binds only ``<cqrs_id>`` and ``cqrs.<queue>.<cqrs_id>``, and event routing keys are
``dj_cqrs.event.<name>``: it must converge exactly as without events and never see one (its
consumer would log "CQRS couldn't proceed ..." and drop it), while a queue bound as ours are for
handlers (``dj_cqrs.event.#``) gets every event. The other way round, a django-cqrs master next to
our consumer that has a handler for every event name: its model events are applied, the handler
runs for nothing but a real domain event.
"""

from __future__ import annotations

import copy
import json
import re
import time
import uuid
from collections import Counter
from typing import Any

import pytest

from integration_tests.compat.flows import start_consumer, wait_converged
from integration_tests.compat.test_mixed_fleet import (
    TAG_1,
    check_scenario_state,
    core_steps,
    sync_and_compare,
)
from integration_tests.compat.wire import Observer, message_count, take
from integration_tests.harness import CaptureQueue, log_text, pg_query, publish_raw, wait_until

pytestmark = pytest.mark.compat

EVENT_PREFIX = "dj_cqrs.event."
BODY_KEYS = [
    "dj_cqrs_event", "id", "name", "key", "seq", "version", "data", "meta",
    "occurred_at", "correlation_id", "retries", "expires",
]  # fmt: skip
# What django-cqrs 3.1.0's consumer logs for a message it cannot take (a body without
# ``instance_pk`` ...), a failure, a dead letter, or an unknown cqrs_id.
THEIR_COMPLAINTS = (
    "couldn't",
    "is failed",
    "is denied",
    "dead letter",
    "is not found",
    "ERROR",
    "Traceback",
    "dj_cqrs_event",
    EVENT_PREFIX,
)

# Model messages of core_steps(our_master=True) on our master: one per committed create, update
# or delete (a transaction with several saves of one row sends one), one per row of a bulk op.
MODEL_MESSAGES = 6 + 2 + 1 + 2 + 3 + 2 + 2 + 1 + 1 + 1


def emit(
    name: str, key: Any, data: dict[str, Any], meta: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {"op": "emit", "name": name, "key": key, "data": data, "meta": meta}


def steps_with_events(queue: str) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """core_steps of our master with domain events in between and inside its transactions.

    Some names are the routing keys django-cqrs replicas bind (``it_product``, ``it_tag``,
    ``it_note``) or the shape of a direct sync to this very queue: were an event routed by its
    bare name, their queue would get it. Returns the steps and the (name, key) emitted, in order.
    """
    steps: list[dict[str, Any]] = []
    for step in core_steps(our_master=True):
        step = copy.deepcopy(step)
        if step["op"] == "atomic":
            # Emitted in the transaction of the model changes (committed with them).
            first = step["steps"][0]
            step["steps"].insert(
                1, emit("product.changed", first["id"], {"fields": first["fields"]})
            )
        steps.append(step)
        if step["op"] == "create" and step.get("model", "product") == "product" and step["id"] == 1:
            steps.append(
                emit("product.created", 1, {"price": "12345678.901234", "name": "Kaffee ☕ 1/2"})
            )
            steps.append(emit("it_product", 1, {"collides": "with their binding it_product"}))
            steps.append(
                emit(
                    f"cqrs.{queue}.it_product", 2, {"collides": "with a direct sync to their queue"}
                )
            )
        elif step["op"] == "delete" and step["id"] == 5:
            # A DELETE and an event with meta in one transaction.
            steps[-1] = {
                "op": "atomic",
                "steps": [
                    step,
                    emit("product.deleted", 5, {"reason": "stock ✓/"}, meta={"by": "it"}),
                ],
            }
        elif step["op"] == "create" and step["id"] == TAG_1:
            steps.append(emit("it_tag", TAG_1, {"label": "uuid pk ☕/"}))
        elif step["op"] == "bulk_update":
            steps.append(emit("it_note", 1, {"nested": {"list": [1, 2.5, None, True]}}))
    emitted = [
        (inner["name"], str(inner["key"]))
        for step in steps
        for inner in [step, *step.get("steps", [])]
        if inner["op"] == "emit"
    ]
    return steps, emitted


@pytest.mark.fleet_env({"IT_LOG_LEVEL": "INFO"})
def test_our_events_never_reach_their_replica(our_master_their_replica):
    fleet = our_master_their_replica
    consumer = start_consumer(fleet.replica, fleet.queue)  # django-cqrs's cqrs_consume
    observer = Observer(fleet.exchange, fleet.queue)  # everything published
    # Bound as our consumer's queue is for a handler of every event (deleted at the end).
    handlers_queue = CaptureQueue(
        fleet.exchange,
        [f"{EVENT_PREFIX}#", f"cqrs.{fleet.queue}.{EVENT_PREFIX}#"],
        name=f"{fleet.queue}.events",
    )
    try:
        steps, emitted = steps_with_events(fleet.queue)
        assert len(emitted) == 8
        expected = fleet.master.scenario(steps)
        check_scenario_state(expected, tag_delete=True)
        wait_converged(
            fleet.replica,
            expected,
            60,
            "django-cqrs replica equals our master, events emitted alongside",
        )

        # Every event reached the queue bound for handlers, once, in order per key.
        events = take(handlers_queue.name, len(emitted), timeout=30)
        bodies = [json.loads(m.raw) for m in events]
        assert all(m.raw.startswith(b'{"dj_cqrs_event"') for m in events), events[0].raw
        assert all(b["dj_cqrs_event"] == 1 for b in bodies)
        assert [list(b) for b in bodies] == [BODY_KEYS] * len(emitted)
        assert [m.routing_key for m in events] == [EVENT_PREFIX + b["name"] for b in bodies]
        assert Counter((b["name"], b["key"]) for b in bodies) == Counter(emitted)
        for key in {k for _, k in emitted}:
            in_order = [(b["name"], b["seq"]) for b in bodies if b["key"] == key]
            assert in_order == [
                (n, i) for i, (n, _) in enumerate([e for e in emitted if e[1] == key], 1)
            ], key
        assert all(b["correlation_id"] == f"it-{b['name']}-{b['key']}" for b in bodies)
        deleted = next(b for b in bodies if b["name"] == "product.deleted")
        assert (deleted["data"], deleted["meta"]) == ({"reason": "stock ✓/"}, {"by": "it"})
        assert len({b["id"] for b in bodies}) == len(emitted)

        # Everything published: the model messages and the same events, nothing else.
        seen = observer.take(MODEL_MESSAGES + len(emitted))
        time.sleep(1)
        assert message_count(observer.queue) == 0, "more messages than model changes and events"
        model_messages = [m for m in seen if not m.routing_key.startswith(EVENT_PREFIX)]
        assert len(model_messages) == MODEL_MESSAGES
        assert all(not m.raw.startswith(b'{"dj_cqrs_event"') for m in model_messages)
        assert sorted(m.raw for m in seen if m.routing_key.startswith(EVENT_PREFIX)) == sorted(
            m.raw for m in events
        )

        # Their consumer received exactly the model messages, and complained about nothing.
        wait_until(
            lambda: log_text(consumer).count("CQRS is received: ") == MODEL_MESSAGES,
            30,
            message="their consumer received every model message",
        )
        sync_and_compare(fleet, expected)  # 3 syncs: their consumer still works as before
        wait_until(
            lambda: log_text(consumer).count("CQRS is received: ") == MODEL_MESSAGES + 3,
            30,
            message="syncs received",
        )
        time.sleep(1)
        log = log_text(consumer)
        assert (
            log.count("CQRS is received: ") == log.count("CQRS is applied: ") == MODEL_MESSAGES + 3
        ), log[-3000:]
        complaints = [
            line for line in log.splitlines() if any(word in line for word in THEIR_COMPLAINTS)
        ]
        assert complaints == [], "\n".join(complaints)
        assert message_count(fleet.queue) == 0
        assert message_count(f"dead_letter_{fleet.queue}") == 0
        assert handlers_queue.count() == 0
        assert consumer.poll() is None, log[-3000:]
    finally:
        handlers_queue.close()


# Model messages of core_steps(our_master=False) on a django-cqrs master (one per save of a
# transaction, one per row of a bulk op), then the 3 syncs of sync_and_compare.
THEIR_MODEL_MESSAGES = 6 + 2 + 1 + 2 + 3 + 2 + 2 + 1 + 3
# The line our consumer logs for each message it acknowledges (applied or ignored) and for any
# other outcome (retry, dead letter).
OUR_OUTCOME = re.compile(
    r" django-cqrs\.consumer CQRS (applied|ignored \([^)]*\)|failed, retry in \S+|dead-lettered): (\S+)"
)
# Two workers may take a row's messages out of order: what our replica then ignores, by design.
MODEL_IGNORED = {
    "ignored (stale revision)",
    "ignored (duplicate revision)",
    "ignored (the object was deleted later: tombstone)",
    "ignored (delete older than the stored object)",
}


@pytest.mark.fleet_env({"IT_EVENT_HANDLERS": "1", "IT_LOG_LEVEL": "INFO"})
def test_their_master_next_to_our_consumer_with_handlers(their_master_our_replica):
    """Nothing to configure the other way: our consumer, with a handler for every event name
    (``#``, its queue bound with ``dj_cqrs.event.#`` too), applies django-cqrs's model events as
    before and runs the handler only for a real domain event."""
    fleet = their_master_our_replica
    consumer = start_consumer(fleet.replica, fleet.queue, "-w", "2")  # ours
    observer = Observer(fleet.exchange, fleet.queue)

    def outcomes() -> list[tuple[str, str]]:
        return [m.groups() for m in OUR_OUTCOME.finditer(log_text(consumer))]

    expected = fleet.master.scenario(core_steps(our_master=False))
    check_scenario_state(expected, tag_delete=False)
    wait_converged(
        fleet.replica, expected, 60, "our replica with handlers equals the django-cqrs master"
    )
    sync_and_compare(fleet, expected)
    assert len(observer.take(THEIR_MODEL_MESSAGES)) == THEIR_MODEL_MESSAGES
    wait_until(
        lambda: len(outcomes()) >= THEIR_MODEL_MESSAGES, 30, message="every model message taken"
    )

    database = fleet.replica.env["IT_DB_NAME"]
    inbox = "SELECT handler, name, key, seq, status FROM dj_cqrs_inbox ORDER BY id"
    assert pg_query(database, inbox) == []
    assert "it_events handled" not in log_text(consumer)

    # The handler is live: a domain event (as our masters send it) on the same exchange runs it once.
    body = {
        "dj_cqrs_event": 1,
        "id": str(uuid.uuid4()),
        "name": "it.ping",
        "key": "ping ☕/1",
        "seq": 1,
        "version": 1,
        "data": {"n": 1},
        "meta": None,
        "occurred_at": "2026-12-02T12:00:00+00:00",
        "correlation_id": None,
        "retries": 0,
        "expires": None,
    }
    publish_raw(
        fleet.exchange, f"{EVENT_PREFIX}it.ping", json.dumps(body, ensure_ascii=False).encode()
    )
    wait_until(
        lambda: pg_query(database, inbox), 30, message="the handler ran for the domain event"
    )
    time.sleep(1)
    assert pg_query(database, inbox) == [
        ("it_events.everything", "it.ping", "ping ☕/1", 1, "handled")
    ]
    log = log_text(consumer)
    assert log.count("it_events handled ") == 1, log[-3000:]
    assert "it_events handled name=it.ping key=ping ☕/1 seq=1" in log

    # One outcome line per message: the model messages (applied, or ignored as stale: two workers)
    # by cqrs_id, the event by name; no retry, no dead letter, nothing else.
    seen = outcomes()
    assert len(seen) == THEIR_MODEL_MESSAGES + 1, log[-3000:]
    assert Counter(what.split("=")[0] for _, what in seen) == {
        "cqrs_id": THEIR_MODEL_MESSAGES,
        "event": 1,
    }
    assert {status for status, _ in seen} <= {"applied", *MODEL_IGNORED}, seen
    assert ("applied", "event=it.ping") in seen
    assert "Traceback" not in log and "dead-lettered" not in log, log[-3000:]
    assert fleet.replica.state() == expected
    assert message_count(observer.queue) == 1  # the ping: nothing else was published
    assert message_count(fleet.queue) == 0
    assert message_count(f"dead_letter_{fleet.queue}") == 0
    assert consumer.poll() is None, log[-3000:]
