"""The deliverer's threads and the real HTTP sender, against an http.server on 127.0.0.1."""

from __future__ import annotations

import http.server
import json
import threading
import time

import pytest
from django.db import transaction

from dj_cqrs.master import commit_listeners
from dj_cqrs.process.lifecycle import StopFlag
from dj_cqrs.webhooks import sender, subscriptions, verify
from dj_cqrs.webhooks.deliverer import Deliverer
from tests.apps.master_app.models import SimplestModel

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
