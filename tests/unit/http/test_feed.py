"""The change feed (dj_cqrs.master.feed): commit order, current state, holes in the outbox ids."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections, transaction

from dj_cqrs.events import emit
from dj_cqrs.master import feed
from dj_cqrs.models import OutboxEvent
from tests.apps.master_app.models import BasicFieldsModel, SimplestModel

pytestmark = pytest.mark.django_db(transaction=True)


def _read_all(after: int = 0, **kwargs):
    items, position = [], after
    while True:
        page = feed.read("default", position, limit=3, **kwargs)
        items += page.items
        assert page.position >= position
        position = page.position
        if not page.has_more:
            return items, position


def test_items_are_wire_bodies_in_commit_order_with_current_state(transport):
    a = SimplestModel.objects.create(name="a")
    b = SimplestModel.objects.create(name="b")
    a.name = "a2"
    a.save()
    b_pk = b.pk
    b.delete()
    BasicFieldsModel.objects.create(int_field=1, char_field="x")
    items, position = _read_all(cqrs_ids=["simplest"])
    assert position == OutboxEvent.objects.latest("id").id
    assert [(i.signal, i.key) for i in items] == [
        ("SAVE", str(a.pk)),
        ("SAVE", str(a.pk)),
        ("DELETE", str(b_pk)),
    ]
    # A SAVE is served with the state as it is now (the SAVE of b is gone: its DELETE follows).
    assert [i.body["instance_data"]["name"] for i in items[:2]] == ["a2", "a2"]
    assert items[0].body["instance_data"]["cqrs_revision"] == 1
    assert items[2].body["signal_type"] == "DELETE" and items[2].body["instance_pk"] == b_pk
    assert items[0].event_id == items[1].event_id  # same state, same id
    assert {i.cqrs_id for i in _read_all()[0]} == {"simplest", "basic"}


def test_domain_events_only_when_a_pattern_matches(transport):
    emit("order.placed", "o1", {"total": 3})
    emit("invoice.sent", "i1", {})
    SimplestModel.objects.create(name="a")
    assert [i.signal for i in _read_all()[0]] == ["SAVE"]
    items, _ = _read_all(cqrs_ids=[], event_patterns=["order.*"])
    assert [(i.cqrs_id, i.key, i.body["data"]) for i in items] == [
        ("order.placed", "o1", {"total": 3})
    ]
    assert items[0].event_id == items[0].body["id"]


def test_a_settled_hole_is_passed(transport):
    SimplestModel.objects.create(name="a")
    SimplestModel.objects.create(name="b")
    OutboxEvent.objects.filter(
        id=OutboxEvent.objects.latest("id").id
    ).delete()  # a hole, as a rollback leaves
    SimplestModel.objects.create(name="c")
    items, position = _read_all()
    assert [i.body["instance_data"]["name"] for i in items] == ["a", "c"]
    assert position == OutboxEvent.objects.latest("id").id


def test_head_is_the_newest_position_when_no_transaction_is_open(transport):
    assert feed.head("default") == 0
    SimplestModel.objects.create(name="a")
    assert feed.head("default") == OutboxEvent.objects.latest("id").id
    assert feed.read("default", feed.head("default")).items == []


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="needs concurrent writers (PostgreSQL)"
)
def test_the_feed_stops_before_a_hole_an_open_transaction_holds(transport):
    SimplestModel.objects.create(name="a")
    start = OutboxEvent.objects.latest("id").id - 1
    started, release = threading.Event(), threading.Event()

    def slow_writer():
        try:
            with transaction.atomic():
                SimplestModel.objects.create(name="slow")  # takes the next outbox id, commits later
                started.set()
                release.wait(10)
        finally:
            connections.close_all()

    thread = threading.Thread(target=slow_writer)
    thread.start()
    try:
        assert started.wait(10)
        SimplestModel.objects.create(name="fast")  # committed after the hole
        first = [i.body["instance_data"]["name"] for i in _read_all(start)[0]]
        assert first == ["a"]
        assert feed.head("default") < OutboxEvent.objects.latest("id").id
    finally:
        release.set()
        thread.join()
    items, _ = _read_all(start)
    assert [i.body["instance_data"]["name"] for i in items] == ["a", "slow", "fast"]
