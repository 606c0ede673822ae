"""Reviewer reproductions for the background dispatcher (PostgreSQL: thread mode)."""
from __future__ import annotations

import time

import pytest
from django.conf import settings
from django.db import connection
from django.test import override_settings

from dj_cqrs.master.dispatcher import dispatcher
from dj_cqrs.master.relay import Relay
from dj_cqrs.transport import reset_transport
from tests.apps.master_app.models import SimplestModel
from tests.unit.regressions.slow_transport import SlowTransport

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "other"])


@pytest.fixture
def slow():
    if connection.vendor != "postgresql":
        pytest.skip("thread mode needs PostgreSQL")
    cqrs = dict(settings.CQRS, transport="tests.unit.regressions.slow_transport.SlowTransport")
    cqrs["master"] = {**cqrs["master"], "outbox_publish": "thread"}
    SlowTransport.sent = []
    SlowTransport.delay, SlowTransport.fail = 0.0, False
    with override_settings(CQRS=cqrs):
        reset_transport()
        yield SlowTransport
        SlowTransport.delay, SlowTransport.fail = 0.0, False
        dispatcher.drain(60)
    reset_transport()


def test_dispatcher_and_relay_do_not_publish_the_same_event_twice(slow):
    slow.delay = 3.0                         # a slow broker (or a backlog in the dispatcher queue)
    obj = SimplestModel.objects.create(name="a")
    time.sleep(2.5)                          # older than outbox_grace (2 s): the relay takes it too
    Relay().run_once()
    dispatcher.drain(30)
    published = [p for p in slow.sent if p.pk == obj.pk]
    assert len(published) == 1, f"event published {len(published)} times"


def test_dispatcher_queue_stays_bounded_while_the_broker_is_down(slow):
    slow.delay, slow.fail = 5.0, True        # every attempt takes 5 s to fail (unreachable host: pika connect timeouts x retries are longer)
    for i in range(3000):
        SimplestModel.objects.create(name=str(i))
    time.sleep(1.0)
    queued = dispatcher._queue.qsize() if dispatcher._queue is not None else 0
    print("items queued in memory while the broker is down:", queued)
    assert queued < 50, f"{queued} payload snapshots held in memory (unbounded SimpleQueue)"
