"""The management API part of :mod:`dj_cqrs.ops.broker`, against a local HTTP server that answers
as RabbitMQ's management plugin does."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pika
import pytest
from django.test import override_settings

from dj_cqrs.ops import broker
from tests.unit.conftest import cqrs_with


@pytest.fixture
def management():
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            seen.append((self.path, self.headers.get("Authorization")))
            if (
                self.headers.get("Authorization")
                != "Basic " + base64.b64encode(b"ops:s3cr%t").decode()
            ):
                self.send_response(401)
                self.end_headers()
                return
            body = json.dumps(
                {
                    "messages_ready": 40,
                    "messages_unacknowledged": 7,
                    "consumers": 2,
                    "message_stats": {"ack_details": {"rate": 20.0}},
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://ops:s3cr%25t@127.0.0.1:{server.server_port}/", seen
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_unacked_and_lag_from_the_management_api(management):
    url, seen = management
    params = pika.URLParameters("amqp://guest:guest@127.0.0.1:5672/%2F")
    stats = broker.QueueStats("orders replica", ready=40, consumers=2)
    notes: list[str] = []
    with override_settings(CQRS=cqrs_with(status={"management_url": url})):
        broker.fill_from_management(params, "orders replica", stats, notes)
    assert (stats.unacked, stats.ack_rate, stats.lag, stats.stalled) == (7, 20.0, 2.35, False)
    assert notes == []
    assert seen[0][0] == "/api/queues/%2F/orders%20replica"


def test_wrong_credentials_or_no_api_leave_the_figures_unknown(management):
    url, _ = management
    params = pika.URLParameters("amqp://guest:guest@127.0.0.1:5672/%2F")
    notes: list[str] = []
    stats = broker.QueueStats("q", ready=1)
    with override_settings(
        CQRS=cqrs_with(status={"management_url": url.replace("s3cr%25t", "wrong")})
    ):
        broker.fill_from_management(params, "q", stats, notes)
    assert stats.unacked is None and "management API not reachable (HTTPError)" in notes[0]
    with override_settings(CQRS=cqrs_with(status={"management_url": False})):
        broker.fill_from_management(params, "q", stats, notes)
    assert "management API turned off" in notes[1]


def test_management_url_derivation():
    with override_settings(CQRS=cqrs_with(status={})):
        params = pika.URLParameters("amqp://user:p%40ss@rabbit.internal:5672/vh")
        assert broker.management_url(params) == "http://user:p%40ss@rabbit.internal:15672/"
    with override_settings(CQRS=cqrs_with(status={"management_url": "https://mgmt:15671"})):
        assert broker.management_url(params) == "https://mgmt:15671/"
    with override_settings(CQRS=cqrs_with(status={"management_url": False})):
        assert broker.management_url(params) is None


class _Channel:
    def queue_declare(self, queue, passive=False):
        from types import SimpleNamespace

        return SimpleNamespace(method=SimpleNamespace(message_count=20, consumer_count=0))

    def close(self):
        pass


class _Connection:
    def __init__(self, params):
        self._impl = type("Impl", (), {"params": params})()

    def channel(self):
        return _Channel()

    def close(self):
        pass


def test_a_partitioned_service_gets_the_management_figures_of_all_its_partitions(
    management, monkeypatch
):
    # Before, a partitioned service skipped the management API: no unacknowledged messages, no
    # lag, and a backlog nobody consumed was never 'stalled' (cqrs_status said healthy).
    from dj_cqrs.transport import rabbit_mq

    url, seen = management
    monkeypatch.setattr(pika, "BlockingConnection", _Connection)
    config = cqrs_with(
        transport="rabbitmq",
        url="amqp://guest:guest@127.0.0.1:5672/%2F",
        queue="orders",
        replica={"partitions": 2},
        status={"management_url": url},
    )
    with override_settings(CQRS=config):
        result = broker.queue_stats(rabbit_mq.RabbitMQTransport())
    stats = result.queue
    assert (stats.ready, stats.unacked, stats.ack_rate) == (40, 14, 40.0)
    assert stats.lag == 1.35 and not stats.stalled
    assert sorted(path for path, _auth in seen) == [
        "/api/queues/%2F/orders.p0",
        "/api/queues/%2F/orders.p1",
    ]
