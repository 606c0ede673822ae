"""Mixed fleets over the real RabbitMQ and PostgreSQL: one service on our dj_cqrs, the other on
django-cqrs 3.1.0 from PyPI (its own virtualenv), running the same service code.

Direction A: our master → their replica (django-cqrs ``cqrs_consume``).
Direction B: their master → our replica (our ``cqrs_consume -w 2``).

Every replica row is compared field by field with the master (``it_state`` dumps, which include
``cqrs_revision``).
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from integration_tests.compat.flows import start_consumer, wait_converged
from integration_tests.compat.wire import Observer, message_count, take
from integration_tests.harness import log_text, stop_process, wait_until

pytestmark = pytest.mark.compat

TAG_1 = "0b0c3f5e-1d4a-4f57-9a52-1f0b3c6b8a10"
TAG_2 = "1b0c3f5e-1d4a-4f57-9a52-1f0b3c6b8a10"
MASTER_META = {"origin": "it-master ☕/", "model": "Note"}

# django-cqrs replicas parse JSON numbers as floats, and django-cqrs masters write Decimals through
# a float: every decimal here has at most 15 significant digits, so it survives a float exactly in
# both directions. (Exactness of longer decimals, our master → our replica, is tested elsewhere.)
PRODUCTS: dict[int, dict[str, Any]] = {
    1: {
        "name": "Kaffee ☕ 1/2",
        "description": 'Grüße / "quoted" \\ back\nslash',
        "price": "12345678.901234",
        "created_at": "2026-11-22T08:27:56.123456+00:00",
        "release_date": "2024-01-02",
        "external_id": "00000000-0000-0000-0000-000000000005",
        "active": True,
        "category": 3,
    },
    2: {
        "name": "naïve / ünïcödé ✓",
        "description": "</script> \u2028 \t tab",
        "price": "-0.000001",
        "created_at": "2026-01-01T00:00:00+00:00",  # no microseconds: str() drops the fraction
        "release_date": "1999-12-31",
        "external_id": "9f1c6c1e-3b7a-4c1e-8d2f-0123456789ab",
        "active": False,
        "category": None,
    },
    3: {
        "name": "日本語/テキスト",
        "price": "999999999.999999",
        "created_at": "2026-06-30T23:59:59.5+05:30",  # aware, not UTC
        "release_date": "2000-02-29",
        "external_id": "ffffffff-ffff-4fff-bfff-ffffffffffff",
        "category": 7,
    },
    4: {"name": "emoji 🎉/🚀", "price": "0", "created_at": None, "release_date": None, "external_id": None},
    5: {"name": "to delete 1/2"},
    6: {"name": "to delete 2/2", "category": 3},
}


def core_steps(our_master: bool) -> list[dict[str, Any]]:
    """The scenario of both directions. Only our master also gets a UUID-pk delete (django-cqrs's
    master cannot send one, its issue #163) and two objects of one row saved in one transaction
    (django-cqrs's master sends a stale message for it, see the dedicated test below)."""
    steps: list[dict[str, Any]] = [{"op": "create", "id": pk, "fields": fields} for pk, fields in PRODUCTS.items()]
    steps += [
        {"op": "update", "id": 1, "fields": {"price": "0.5", "category": None, "name": "Kaffee ☕ 2/2"}},
        {"op": "update", "id": 2, "fields": {"category": 9, "active": True, "description": "new ☕/"}},
        # One Python object saved twice in one transaction: django-cqrs bumps the revision by 2
        # and sends one message, so a replica sees a gap.
        {"op": "atomic", "same_object": True, "steps": [
            {"op": "update", "id": 3, "fields": {"name": "twice / in one transaction"}},
            {"op": "update", "id": 3, "fields": {"price": "1.25"}},
        ]},
        {"op": "delete", "id": 5},
        {"op": "delete", "id": 6},
        {"op": "bulk_create", "items": [{"id": 100 + i, "fields": {"name": f"bulk {i} ✓/", "price": f"{i}.5"}} for i in range(3)]},
        {"op": "bulk_update", "ids": [100, 101], "fields": {"name": "bulk updated ✓/"}},
        {"op": "create", "model": "tag", "id": TAG_1, "fields": {"label": "uuid pk ☕/"}},
        {"op": "create", "model": "tag", "id": TAG_2, "fields": {"label": "second"}},
        {"op": "update", "model": "tag", "id": TAG_1, "fields": {"label": "uuid pk updated"}},
    ]
    if our_master:
        steps.append({"op": "delete", "model": "tag", "id": TAG_2})
        steps.append({"op": "atomic", "steps": [
            {"op": "update", "id": 4, "fields": {"name": "two objects ✓/"}},
            {"op": "update", "id": 4, "fields": {"price": "4.75"}},
        ]})
    return steps


def drift(fleet: Any) -> None:
    """Change replica rows behind the consumer's back (revision too high, as after a bad restore)."""
    fleet.replica.manage(
        "shell",
        "-c",
        "from catalog.models import ProductRef, TagRef; "
        "ProductRef.objects.filter(pk__in=[2, 3]).update(name='drift', price=None, cqrs_revision=99); "
        f"TagRef.objects.filter(pk='{TAG_1}').update(label='drift')",
    )


def sync_and_compare(fleet: Any, expected: dict[str, Any]) -> None:
    drift(fleet)
    assert fleet.replica.state() != expected
    synced = fleet.master.scenario(
        [
            {"op": "sync", "id": 2},  # broadcast: routing key it_product
            {"op": "sync", "id": 3, "queue": fleet.queue},  # direct: cqrs.<queue>.it_product
            {"op": "sync", "model": "tag", "id": TAG_1, "queue": fleet.queue},
        ]
    )
    assert synced == expected, "cqrs_sync must not change the master"
    wait_converged(fleet.replica, expected, 60, "cqrs_sync repaired the drifted replica rows")


def check_scenario_state(state: dict[str, Any], tag_delete: bool) -> None:
    """The master state the scenario must produce (guards against a scenario that did nothing)."""
    products = state["it_product"]
    assert sorted(products, key=int) == ["1", "2", "3", "4", "100", "101", "102"]
    assert products["1"]["category"] is None and products["1"]["price"] == "0.500000"
    assert products["2"]["category"] == 9 and products["2"]["active"] is True
    assert products["3"]["created_at"] == "2026-06-30T18:29:59.500000+00:00"
    assert products["101"]["name"] == "bulk updated ✓/"
    assert set(state["it_tag"]) == ({TAG_1} if tag_delete else {TAG_1, TAG_2})


# -- direction A: our master → django-cqrs replica ----------------------------------------------


def test_our_master_to_their_replica(our_master_their_replica):
    fleet = our_master_their_replica
    consumer = start_consumer(fleet.replica, fleet.queue)  # django-cqrs's cqrs_consume

    expected = fleet.master.scenario(core_steps(our_master=True))
    check_scenario_state(expected, tag_delete=True)
    # Our master bumps the revision once per transaction and sends one message with the final
    # state, whether one object or two were saved.
    assert expected["it_product"]["3"]["cqrs_revision"] == 1
    assert expected["it_product"]["4"]["cqrs_revision"] == 1
    assert (expected["it_product"]["4"]["name"], expected["it_product"]["4"]["price"]) == ("two objects ✓/", "4.750000")
    wait_converged(fleet.replica, expected, 60, "django-cqrs replica equals our master")
    # Our master's DELETE of a UUID-pk row (``"id": "<uuid>"``) is applied by django-cqrs's
    # replica (django-cqrs's own master cannot send it, its issue #163).
    assert TAG_2 not in fleet.replica.state()["it_tag"]

    sync_and_compare(fleet, expected)
    assert consumer.poll() is None, log_text(consumer)


@pytest.mark.fleet_env({"IT_CQRS_MAX_RETRIES": "1", "IT_LOG_LEVEL": "INFO"})
def test_our_bodies_keep_meta_correlation_expires_retries_on_their_consumer(our_master_their_replica):
    fleet = our_master_their_replica
    consumer = start_consumer(fleet.replica, fleet.queue)
    observer = Observer(fleet.exchange, fleet.queue)

    expected = fleet.master.scenario(
        [
            {"op": "create", "model": "note", "id": 1, "fields": {"text": "ok ☕ 1/2"}},
            {"op": "create", "model": "note", "id": 2, "fields": {"text": "fail ☕/ on the replica"}},
            {"op": "update", "model": "note", "id": 1, "fields": {"text": "ok ☕ 2/2"}},
        ]
    )
    sent = {(m.body["instance_pk"], m.body["instance_data"]["cqrs_revision"]): m for m in observer.take(3)}

    wait_until(lambda: fleet.replica.state()["it_note"].get("1") == expected["it_note"]["1"], 30, message="note 1 applied")
    # django-cqrs's replica received our meta intact (CQRS_META=True hands it to cqrs_create/update).
    received = json.loads(fleet.replica.manage("it_received").stdout)
    assert received == [
        {"note_id": 1, "revision": 0, "sync": False, "meta": MASTER_META},
        {"note_id": 1, "revision": 1, "sync": False, "meta": MASTER_META},
    ]
    # ... and logged our correlation id.
    wait_until(lambda: "correlation_id = it-it_note-1" in log_text(consumer), 10, message="correlation id in their log")

    # Note 2 fails on their replica: retried once (CQRS_MAX_RETRIES=1), then dead-lettered by
    # django-cqrs, which re-serializes the payload it parsed from our body.
    (dead,) = take(f"dead_letter_{fleet.queue}", 1, timeout=60)
    original = sent[(2, 0)].body
    letter = dead.body
    assert original["retries"] == 0
    assert letter["retries"] == 1
    for key in ("signal_type", "cqrs_id", "instance_pk", "instance_data", "previous_data", "correlation_id", "meta"):
        assert letter[key] == original[key], key
    assert original["correlation_id"] == "it-it_note-2"
    assert original["meta"] == MASTER_META
    # The expiry django-cqrs parsed from our body is the one it writes back (same instant).
    assert _instant(letter["expires"]) == _instant(original["expires"])
    assert fleet.replica.state()["it_note"].keys() == {"1"}
    assert message_count(f"dead_letter_{fleet.queue}") == 0
    assert consumer.poll() is None


@pytest.mark.fleet_env({"IT_CQRS_MESSAGE_TTL": "1"})
def test_our_expires_is_honoured_by_their_consumer(our_master_their_replica):
    fleet = our_master_their_replica
    stop_process(start_consumer(fleet.replica, fleet.queue))  # declare the queue, then stay down
    observer = Observer(fleet.exchange, fleet.queue)
    fleet.master.scenario([{"op": "create", "model": "note", "id": 1, "fields": {"text": "expires in 1 s"}}])
    (sent,) = observer.take(1)
    expires = _instant(sent.body["expires"])
    wait_until(lambda: datetime.datetime.now(datetime.timezone.utc) > expires + datetime.timedelta(seconds=0.5), 10, message="expiry passed")

    consumer = start_consumer(fleet.replica, fleet.queue)
    (dead,) = take(f"dead_letter_{fleet.queue}", 1, timeout=30)
    assert dead.body["instance_pk"] == 1 and _instant(dead.body["expires"]) == expires
    assert fleet.replica.state()["it_note"] == {}
    assert consumer.poll() is None


@pytest.mark.fleet_env({"IT_LOG_LEVEL": "INFO"})
def test_their_replica_drops_even_our_direct_syncs_for_only_direct_syncs_models(our_master_their_replica):
    """Observed django-cqrs 3.1.0 defect, documented for mixed fleets: its consumer never learns
    the target queue (not in the body, not read from the routing key), so a replica model with
    ``CQRS_ONLY_DIRECT_SYNCS`` acknowledges and drops every sync, ours sent with
    ``cqrs_sync(queue=<its queue>)`` included. Nothing in our master can change that: repair such
    replicas with SAVEs, or move them to dj_cqrs first."""
    fleet = our_master_their_replica
    consumer = start_consumer(fleet.replica, fleet.queue)
    expected = fleet.master.scenario([{"op": "create", "model": "note", "id": 1, "fields": {"text": "note"}}])
    wait_converged(fleet.replica, expected, 30, "note created")
    fleet.replica.manage("shell", "-c", "from catalog.models import NoteRef; NoteRef.objects.filter(pk=1).update(text='drift')")

    fleet.master.scenario([{"op": "sync", "model": "note", "id": 1, "queue": fleet.queue}])
    wait_until(
        lambda: log_text(consumer).count("CQRS is applied: pk = 1 (it_note)") == 2,
        30,
        message="their consumer took the direct sync",
    )
    assert fleet.replica.state()["it_note"]["1"]["text"] == "drift"
    received = json.loads(fleet.replica.manage("it_received").stdout)
    assert [(r["revision"], r["sync"]) for r in received] == [(0, False)]  # cqrs_update never ran
    assert consumer.poll() is None


# -- direction B: django-cqrs master → our replica ----------------------------------------------


def test_their_master_to_our_replica(their_master_our_replica):
    fleet = their_master_our_replica
    consumer = start_consumer(fleet.replica, fleet.queue, "-w", "2")  # ours

    # No UUID-pk delete: django-cqrs cannot publish it (issue #163, TypeError in its master).
    expected = fleet.master.scenario(core_steps(our_master=False))
    check_scenario_state(expected, tag_delete=False)
    # django-cqrs bumps twice for two saves of the same row in one transaction; our replica must
    # accept the gap.
    assert expected["it_product"]["3"]["cqrs_revision"] == 2
    wait_converged(fleet.replica, expected, 60, "our replica equals the django-cqrs master")

    sync_and_compare(fleet, expected)
    assert consumer.poll() is None, log_text(consumer)


def test_their_two_objects_for_one_row_in_one_transaction_reach_our_replica(their_master_our_replica):
    """Two Python objects for one row saved in one transaction: django-cqrs bumps the revision
    twice and sends two messages that carry the *same* revision (read back at commit), the first
    with the state of the first object (stale), the second with the final state. A replica that
    drops the second as a duplicate keeps stale data until the next change; ours applies an equal
    revision when its ``cqrs_updated`` is newer.

    One worker: the two messages must be applied in order (two workers applying two messages for
    the same row at once is a race unless the replica model sets ``CQRS_SELECT_FOR_UPDATE``)."""
    fleet = their_master_our_replica
    consumer = start_consumer(fleet.replica, fleet.queue)
    observer = Observer(fleet.exchange, fleet.queue)
    expected = fleet.master.scenario(
        [
            {"op": "create", "id": 1, "fields": {"name": "first", "price": "1.5"}},
            {"op": "atomic", "steps": [
                {"op": "update", "id": 1, "fields": {"name": "second"}},
                {"op": "update", "id": 1, "fields": {"price": "2.5"}},
            ]},
        ]
    )
    create, stale, final = (m.body["instance_data"] for m in observer.take(3))
    assert (stale["cqrs_revision"], final["cqrs_revision"]) == (2, 2)
    assert (stale["price"], final["price"]) == (1.5, 2.5)
    assert expected["it_product"]["1"]["price"] == "2.500000"
    wait_converged(fleet.replica, expected, 30, "our replica has the final state")
    assert consumer.poll() is None


@pytest.mark.fleet_env({"IT_CQRS_MAX_RETRIES": "1", "IT_LOG_LEVEL": "INFO"})
def test_their_bodies_keep_meta_correlation_expires_retries_on_our_consumer(their_master_our_replica):
    fleet = their_master_our_replica
    consumer = start_consumer(fleet.replica, fleet.queue, "-w", "2")
    observer = Observer(fleet.exchange, fleet.queue)

    expected = fleet.master.scenario(
        [
            {"op": "create", "model": "note", "id": 1, "fields": {"text": "ok ☕ 1/2"}},
            {"op": "create", "model": "note", "id": 2, "fields": {"text": "fail ☕/ on the replica"}},
            {"op": "update", "model": "note", "id": 1, "fields": {"text": "ok ☕ 2/2"}},
        ]
    )
    sent = {(m.body["instance_pk"], m.body["instance_data"]["cqrs_revision"]): m for m in observer.take(3)}
    # django-cqrs's body: \uXXXX and \/ escapes, cqrs fields first, Decimal through float.
    assert b"\\u2615" in sent[(1, 0)].raw and b"\\/" in sent[(1, 0)].raw

    wait_until(lambda: fleet.replica.state()["it_note"].get("1") == expected["it_note"]["1"], 30, message="note 1 applied")
    received = json.loads(fleet.replica.manage("it_received").stdout)
    assert sorted(received, key=lambda r: r["revision"]) == [
        {"note_id": 1, "revision": 0, "sync": False, "meta": MASTER_META},
        {"note_id": 1, "revision": 1, "sync": False, "meta": MASTER_META},
    ]
    wait_until(lambda: "correlation_id=it-it_note-1" in log_text(consumer), 10, message="correlation id in our log")

    (dead,) = take(f"dead_letter_{fleet.queue}", 1, timeout=60)
    original = sent[(2, 0)].body
    letter = dead.body
    assert letter["retries"] == 1
    for key in ("signal_type", "cqrs_id", "instance_pk", "instance_data", "previous_data", "correlation_id", "meta"):
        assert letter[key] == original[key], key
    assert _instant(letter["expires"]) == _instant(original["expires"])
    headers = dead.properties["headers"]
    assert headers["x-cqrs-reason"] == "max_retries"
    assert headers["x-cqrs-retries"] == 1
    assert headers["x-cqrs-routing-key"] == "it_note"
    assert fleet.replica.state()["it_note"].keys() == {"1"}
    assert consumer.poll() is None


def test_their_naive_master_reaches_our_replica(their_master_our_replica):
    """A django-cqrs master with USE_TZ=False writes naive ``expires``, ``cqrs_updated`` and
    datetime fields; our replica (USE_TZ=True) takes them as UTC, as that master means them."""
    fleet = their_master_our_replica
    fleet.master.env["IT_USE_TZ"] = "0"
    # One worker: in-order delivery. (With two, the direct sync of row 2 may be applied after its
    # DELETE, and a direct sync always applies, by design: it re-creates the row.)
    consumer = start_consumer(fleet.replica, fleet.queue)
    observer = Observer(fleet.exchange, fleet.queue)
    expected = fleet.master.scenario(
        [
            {"op": "create", "id": 1, "fields": {"name": "naive ☕/", "created_at": "2026-11-22T08:27:56.123456", "price": "3.5"}},
            {"op": "create", "id": 2, "fields": {"name": "naive 2", "created_at": "2026-11-22T08:27:56"}},
            {"op": "update", "id": 1, "fields": {"created_at": "2026-12-31T23:59:59.999999"}},
            {"op": "sync", "id": 2, "queue": fleet.queue},
            {"op": "delete", "id": 2},
        ]
    )
    sent = [m.body for m in observer.take(5)]
    assert all(_naive(body["expires"]) and _naive(body["instance_data"]["cqrs_updated"]) for body in sent)
    assert sent[0]["instance_data"]["created_at"] == "2026-11-22 08:27:56.123456"
    assert expected["it_product"]["1"]["created_at"] == "2026-12-31T23:59:59.999999+00:00"
    wait_converged(fleet.replica, expected, 60, "our replica equals the naive django-cqrs master")
    assert consumer.poll() is None


@pytest.mark.fleet_env({"IT_CQRS_MESSAGE_TTL": "1"})
def test_their_expires_is_honoured_by_our_consumer(their_master_our_replica):
    fleet = their_master_our_replica
    stop_process(start_consumer(fleet.replica, fleet.queue, "-w", "2"))
    observer = Observer(fleet.exchange, fleet.queue)
    fleet.master.scenario([{"op": "create", "model": "note", "id": 1, "fields": {"text": "expires in 1 s"}}])
    (sent,) = observer.take(1)
    expires = _instant(sent.body["expires"])
    wait_until(lambda: datetime.datetime.now(datetime.timezone.utc) > expires + datetime.timedelta(seconds=0.5), 10, message="expiry passed")

    consumer = start_consumer(fleet.replica, fleet.queue, "-w", "2")
    (dead,) = take(f"dead_letter_{fleet.queue}", 1, timeout=30)
    assert dead.properties["headers"]["x-cqrs-reason"] == "expired"
    assert dead.raw == sent.raw  # dead-lettered as received
    assert fleet.replica.state()["it_note"] == {}
    assert consumer.poll() is None


@pytest.mark.fleet_env({"IT_LOG_LEVEL": "INFO"})
def test_only_direct_syncs_on_our_replica_from_their_master(their_master_our_replica):
    """``NoteRef.CQRS_ONLY_DIRECT_SYNCS``: django-cqrs's ``cqrs_sync(queue=<our queue>)`` is applied,
    its broadcast ``cqrs_sync()`` is ignored (the queue comes from the routing key: django-cqrs
    puts none in the body)."""
    fleet = their_master_our_replica
    consumer = start_consumer(fleet.replica, fleet.queue, "-w", "2")
    expected = fleet.master.scenario([{"op": "create", "model": "note", "id": 1, "fields": {"text": "note ☕/"}}])
    wait_converged(fleet.replica, expected, 30, "note created")

    fleet.replica.manage("shell", "-c", "from catalog.models import NoteRef; NoteRef.objects.filter(pk=1).update(text='drift')")
    fleet.master.scenario([{"op": "sync", "model": "note", "id": 1}])
    wait_until(
        lambda: "ignored (broadcast sync, CQRS_ONLY_DIRECT_SYNCS): cqrs_id=it_note pk=1 " in log_text(consumer),
        30,
        message="broadcast sync seen and ignored",
    )
    assert fleet.replica.state()["it_note"]["1"]["text"] == "drift"

    fleet.master.scenario([{"op": "sync", "model": "note", "id": 1, "queue": fleet.queue}])
    wait_converged(fleet.replica, expected, 30, "direct sync applied")
    received = json.loads(fleet.replica.manage("it_received").stdout)
    assert [(r["revision"], r["sync"]) for r in received] == [(0, False), (0, True)]
    assert all(r["meta"] == MASTER_META for r in received)
    assert consumer.poll() is None


def _naive(text: str) -> bool:
    return datetime.datetime.fromisoformat(text).tzinfo is None


def _instant(text: str) -> datetime.datetime:
    value = datetime.datetime.fromisoformat(text)
    assert value.tzinfo is not None, f"naive expires {text!r}"
    return value
