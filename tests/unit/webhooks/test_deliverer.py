"""The deliverer's threads and the real HTTP sender, against an http.server on 127.0.0.1."""

from __future__ import annotations

import http.server
import json
import threading
import time

import pytest
from django.db import transaction
from django.test import override_settings

from dj_cqrs.master import commit_listeners
from dj_cqrs.models import WebhookDelivery, WebhookSubscription
from dj_cqrs.process.lifecycle import StopFlag
from dj_cqrs.webhooks import sender, subscriptions, verify
from dj_cqrs.webhooks.deliverer import Deliverer
from dj_cqrs.webhooks.delivery import SubscriptionDelivery
from tests.apps.master_app.models import SimplestModel
from tests.unit.conftest import cqrs_with
from tests.unit.webhooks.conftest import FAST

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("webhook_settings")]


class Receiver(http.server.ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.received: list[tuple[dict, dict]] = []
        self.answer = 200
        self.delay = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook?x=1"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_PUT(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(self.server.delay)
        verify(body, self.headers, "k")
        self.server.received.append((json.loads(body), dict(self.headers)))
        self.send_response(self.server.answer)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def receiver():
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_put_sends_signed_json_and_reports_failures(receiver):
    outcome = sender.put(receiver.url, b'{"a":1}', "k", "ev-1", timeout=2)
    assert outcome.ok and outcome.status == 200
    body, headers = receiver.received[0]
    assert body == {"a": 1}
    assert headers["Content-Type"] == "application/json" and headers["X-CQRS-Event-Id"] == "ev-1"
    receiver.answer = 302  # redirects are not followed
    assert sender.put(receiver.url, b"{}", "k", "e", timeout=2).error.startswith("HTTP 302")
    receiver.delay, receiver.answer = 0.5, 200
    slow = sender.put(receiver.url, b"{}", "k", "e", timeout=0.1)
    assert not slow.ok and slow.status is None and slow.error.startswith("timeout")
    port = receiver.server_address[1]
    receiver.shutdown()
    receiver.server_close()
    down = sender.put(f"http://127.0.0.1:{port}/", b"{}", "k", "e", timeout=1)
    assert down.status is None and "Refused" in down.error


def test_deliverer_threads_deliver_and_a_commit_wakes_them(receiver):
    subscriptions.add("one", receiver.url, ["simplest"], secret="k")
    stop = StopFlag()
    deliverer = Deliverer(databases=["default"], interval=30.0, stop=stop)
    deliverer.start()
    try:
        deadline = time.monotonic() + 5
        while deliverer.wake not in commit_listeners.listeners and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)  # the subscription's thread is idle now, for up to 30 s unless woken
        with transaction.atomic():
            SimplestModel.objects.create(name="a")
        while len(receiver.received) < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [b["instance_data"]["name"] for b, _ in receiver.received] == ["a"]
    finally:
        stop.set()
        deliverer.join(10)
    assert deliverer.wake not in commit_listeners.listeners
    assert deliverer.delivered == 1


def test_subscriptions_take_turns_beyond_the_concurrency(receiver):
    subscriptions.add("one", receiver.url, ["simplest"], secret="k")
    subscriptions.add("two", receiver.url + "&two=1", ["simplest"], secret="k")
    SimplestModel.objects.create(name="a")
    stop = StopFlag()
    deliverer = Deliverer(databases=["default"], interval=0.05, concurrency=1, stop=stop)
    deliverer.start()
    try:
        deadline = time.monotonic() + 10
        while len(receiver.received) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        deliverer.join(10)
    assert len(receiver.received) == 2
    assert WebhookSubscription.objects.filter(lease_owner="").count() == 2  # leases released


def test_an_idle_subscription_does_not_keep_the_only_thread(receiver):
    # Regression: subscriptions were given threads in last_delivered_at order; an idle one (the
    # oldest last delivery, or none on PostgreSQL, where NULLs sort last) gave its thread back at
    # once and got it again at every schedule: with concurrency 1 the busy one never had a turn.
    from django.utils import timezone

    idle = subscriptions.add("idle", receiver.url + "&idle=1", ["basic"], secret="k")
    busy = subscriptions.add("busy", receiver.url, ["simplest"], secret="k")
    long_ago = timezone.now() - timezone.timedelta(days=1)
    WebhookSubscription.objects.filter(pk=idle.pk).update(last_delivered_at=long_ago)
    WebhookSubscription.objects.filter(pk=busy.pk).update(last_delivered_at=timezone.now())
    SimplestModel.objects.create(name="a")
    stop = StopFlag()
    deliverer = Deliverer(databases=["default"], interval=0.05, concurrency=1, stop=stop)
    deliverer.start()
    try:
        deadline = time.monotonic() + 10
        while not receiver.received and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        deliverer.join(10)
    assert [b["instance_data"]["name"] for b, _ in receiver.received] == ["a"]


def test_a_stop_during_the_back_off_neither_parks_nor_advances(subscriber):
    sub = subscriptions.add("one", "http://127.0.0.1:9/x", ["simplest"], secret="k")
    SimplestModel.objects.create(name="a")
    stop = StopFlag()
    subscriber.fail = lambda d: 503

    def failing_then_stopping(*args):
        stop.set()
        return subscriber(*args)

    with override_settings(
        CQRS=cqrs_with(webhooks={**FAST, "retry_delay": 5, "max_retry_delay": 5})
    ):
        started = time.monotonic()
        result = SubscriptionDelivery(
            "default", sub.id, "me", stop, failing_then_stopping
        ).run_pass()
    assert time.monotonic() - started < 2 and result.delivered == result.parked == 0
    assert not WebhookDelivery.objects.exists()
    assert WebhookSubscription.objects.get().position == sub.position  # sent again by the next pass


def test_a_failed_pass_is_tried_again_by_its_thread_without_waiting_for_a_schedule(
    receiver, monkeypatch
):
    """A pass that raises (the database: 'table is locked', a lost connection) is tried again by
    the subscription's thread after a pause; before, the thread ended and the change waited for
    the next commit or the polling interval (here 30 s)."""
    from dj_cqrs.webhooks import delivery as delivery_module

    real = delivery_module.SubscriptionDelivery.run_pass
    failures = []

    def flaky(self):
        if not failures:
            failures.append(1)
            raise RuntimeError("database table is locked")
        return real(self)

    monkeypatch.setattr(delivery_module.SubscriptionDelivery, "run_pass", flaky)
    subscriptions.add("one", receiver.url, ["simplest"], secret="k")
    SimplestModel.objects.create(name="a")
    stop = StopFlag()
    deliverer = Deliverer(databases=["default"], interval=30.0, stop=stop)
    deliverer.start()
    try:
        deadline = time.monotonic() + 8
        while len(receiver.received) < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert failures == [1]
        assert [b["instance_data"]["name"] for b, _ in receiver.received] == ["a"]
    finally:
        stop.set()
        deliverer.join(10)
