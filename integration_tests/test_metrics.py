"""Metrics and trace context over the real RabbitMQ and PostgreSQL (docs/operations.md).

* ``cqrs_consume -w 2 --metrics-port``: a run with applied, duplicate, failing (retried, then
  dead-lettered) and malformed messages; the Prometheus text scraped over HTTP from the
  supervisor sums both workers; a SIGKILLed worker's counts stay, its live gauge goes.
* ``cqrs_relay --metrics-port``: the outbox backlog read from the master's database and the
  publish failures while the broker cannot be reached, then what a working relay published.
* The W3C trace context of a span active on the master travels as AMQP headers (the body is
  unchanged) and the consumer continues that trace (in-process, unit-test models on SQLite,
  OpenTelemetry SDK with an in-memory exporter).
"""

from __future__ import annotations

import glob
import json
import os
import signal
import socket
import tempfile
import urllib.request
from collections.abc import Iterator

import pytest

from integration_tests.compat.wire import consumer_count
from integration_tests.conftest import Fleet, make_fleet
from integration_tests.failure_helpers import child_pids
from integration_tests.harness import (
    OUR_PYTHON,
    RABBIT_HOST,
    RABBIT_PORT,
    CaptureQueue,
    Service,
    log_text,
    pg_query,
    publish_raw,
    rabbit_cleanup,
    require,
    stop_process,
    unique,
    wait_until,
)

pytest.importorskip("prometheus_client")

UPDATED = "2024-01-02T03:04:05.678901+00:00"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    """``{'name{labels}': value}`` of the Prometheus text at ``http://127.0.0.1:port/metrics``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            samples[key] = float(value)
    return samples


def scrape_or_none(port: int) -> dict[str, float] | None:
    """:func:`scrape`, or None while nothing listens on the port yet."""
    try:
        return scrape(port)
    except OSError:
        return None


def product_body(pk: int, name: str, revision: int = 0) -> bytes:
    data = {
        "id": pk, "name": name, "description": "", "price": None, "created_at": None, "release_date": None,
        "external_id": None, "active": True, "category": None, "cqrs_revision": revision, "cqrs_updated": UPDATED,
    }
    return json.dumps(
        {
            "signal_type": "SAVE",
            "cqrs_id": "it_product",
            "instance_data": data,
            "previous_data": None,
            "instance_pk": pk,
            "correlation_id": None,
            "retries": 0,
            "expires": None,
        }
    ).encode()


@pytest.fixture
def fleet(rabbitmq: None, postgres: None) -> Iterator[Fleet]:
    yield from make_fleet(OUR_PYTHON, OUR_PYTHON, {"IT_CQRS_MAX_RETRIES": "2", "IT_CQRS_RETRY_DELAY": "1"})


def test_consumer_metrics_over_http_with_failures_and_dead_letters(fleet):
    port = free_port()
    temp_dirs = set(glob.glob(os.path.join(tempfile.gettempdir(), "dj_cqrs-metrics-*")))
    supervisor = fleet.replica.start("cqrs_consume", "-w", "2", "--metrics-port", str(port), "--sigint-timeout", "5")
    try:
        wait_until(lambda: consumer_count(fleet.queue) == 2, 30, message=f"2 consumers; log:\n{log_text(supervisor)[-3000:]}")
        fleet.master.scenario([{"op": "create", "id": i, "fields": {"name": f"p{i}"}} for i in range(1, 11)])
        publish_raw(fleet.exchange, "it_product", product_body(1000, "old", 0))
        publish_raw(fleet.exchange, "it_product", product_body(1000, "old", 0))  # same revision again
        publish_raw(fleet.exchange, "it_product", product_body(2000, "x" * 300))  # too long: fails
        publish_raw(fleet.exchange, "it_product", b"not json")
        publish_raw(fleet.exchange, "it_product", b'{"signal_type": "SAVE", "cqrs_id": "nobody"}')

        product = 'cqrs_id="it_product"'

        def settled() -> dict[str, float] | None:
            samples = scrape(port)
            done = samples.get(f'cqrs_dead_letters_total{{{product},reason="max_retries"}}') == 1
            applied = samples.get(f"cqrs_messages_applied_total{{{product}}}") == 11
            return samples if done and applied else None

        samples = wait_until(settled, 40, interval=0.5, message=f"metrics settled; log:\n{log_text(supervisor)[-3000:]}")
        assert samples[f'cqrs_messages_ignored_total{{{product},reason="duplicate"}}'] == 1
        assert samples[f'cqrs_messages_retried_total{{{product},reason="exception"}}'] == 2  # CQRS_MAX_RETRIES=2
        assert samples['cqrs_dead_letters_total{cqrs_id="unknown",reason="invalid_json"}'] == 1
        assert sum(v for k, v in samples.items() if k.startswith('cqrs_dead_letters_total{cqrs_id="unknown"')) == 2
        assert sum(v for k, v in samples.items() if k.startswith("cqrs_dead_letters_total{")) == 3
        assert samples["cqrs_batch_size_sum"] == 11 + 1 + 3 + 2  # every delivery, retries included
        assert samples["cqrs_apply_seconds_count"] == samples["cqrs_batch_size_count"]
        assert samples[f"cqrs_replica_lag_seconds_count{{{product}}}"] == 11
        assert samples["cqrs_consumer_workers"] == 2
        assert not any("nobody" in key for key in samples)  # unknown CQRS_IDs are no label values
        dead = pg_query(fleet.replica.env["IT_DB_NAME"], "SELECT count(*) FROM catalog_productref")[0][0]
        assert dead == 11

        # A worker killed outright: its counts stay, its live gauge goes, its replacement counts.
        victim = sorted(child_pids(supervisor.pid))[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: victim not in child_pids(supervisor.pid) and consumer_count(fleet.queue) == 2,
            30,
            message="the killed worker replaced",
        )
        fleet.master.scenario([{"op": "create", "id": i, "fields": {"name": f"p{i}"}} for i in range(11, 16)])
        samples = wait_until(
            lambda: (s := scrape(port)).get(f"cqrs_messages_applied_total{{{product}}}") == 16 and s,
            30,
            interval=0.5,
            message="the new messages counted",
        )
        assert samples["cqrs_consumer_workers"] == 2
        assert samples[f'cqrs_dead_letters_total{{{product},reason="max_retries"}}'] == 1
    finally:
        assert stop_process(supervisor) == 0, log_text(supervisor)[-3000:]
    # the supervisor's multiprocess directory is gone with it
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "dj_cqrs-metrics-*"))) <= temp_dirs


def test_relay_serves_the_outbox_backlog_and_its_publishing(fleet):
    """Events written with outbox_publish = 'relay'; a relay that cannot reach the broker shows
    the backlog and its failures; a working relay publishes them and the backlog is gone."""
    base = {k: v for k, v in fleet.master.env.items() if k.startswith("IT_")}
    writer = Service("master", OUR_PYTHON, {**base, "IT_OUTBOX_PUBLISH": "relay"})
    writer.scenario([{"op": "create", "id": i, "fields": {"name": f"p{i}"}} for i in range(1, 4)])
    broken = Service(
        "master", OUR_PYTHON, {**base, "IT_OUTBOX_PUBLISH": "relay", "IT_MASTER_CQRS_URL": f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"}
    )
    product = 'cqrs_id="it_product"'
    port = free_port()
    relay = broken.start("cqrs_relay", "--metrics-port", str(port), "--no-webhooks")
    try:
        samples = wait_until(
            lambda: (s := scrape_or_none(port)) and s.get(f"cqrs_publish_failures_total{{{product}}}", 0) >= 3 and s,
            60,
            interval=0.5,
            message=f"the relay's failures; log:\n{log_text(relay)[-2000:]}",
        )
        assert samples[f"cqrs_outbox_pending{{{product}}}"] == 3
        assert samples[f"cqrs_outbox_oldest_pending_seconds{{{product}}}"] > 0
        assert samples.get(f"cqrs_published_total{{{product}}}", 0) == 0
    finally:
        stop_process(relay)
        broken.stop_all()

    port = free_port()
    relay = writer.start("cqrs_relay", "--metrics-port", str(port), "--no-webhooks")
    try:
        samples = wait_until(
            lambda: (s := scrape_or_none(port)) and s.get(f"cqrs_published_total{{{product}}}") == 3
            and s.get(f"cqrs_outbox_pending{{{product}}}") == 0 and s,
            30,
            interval=0.3,
            message=f"the backlog published; log:\n{log_text(relay)[-2000:]}",
        )
        # an empty backlog reads 0 for every master model (a series, not "no data")
        oldest = {k: v for k, v in samples.items() if k.startswith("cqrs_outbox_oldest_pending_seconds{")}
        assert oldest[f"cqrs_outbox_oldest_pending_seconds{{{product}}}"] == 0
        assert set(oldest.values()) == {0}
    finally:
        stop_process(relay)
        writer.stop_all()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("transport", ["rabbitmq", "kombu"])
def test_trace_context_in_amqp_headers_is_continued_by_the_consumer(transport):
    require(RABBIT_HOST, RABBIT_PORT, "RabbitMQ")
    otel_trace = pytest.importorskip("opentelemetry.trace")
    pytest.importorskip("opentelemetry.sdk.trace")
    import pika
    from django.test import override_settings

    from dj_cqrs import tracing
    from integration_tests.failure_helpers import (
        RABBIT_URL,
        declare,
        kombu_cqrs,
        names,
        rabbit_cqrs,
        run_consumer,
    )
    from tests.apps.master_app.models import SimplestModel
    from tests.apps.replica_app.models import SimplestModelRef
    from tests.unit.observability.otel import recording_spans

    exchange, queue = names("trace")
    capture = None
    try:
        settings = rabbit_cqrs(exchange, queue) if transport == "rabbitmq" else kombu_cqrs(exchange, queue, RABBIT_URL)
        with override_settings(CQRS=settings), recording_spans() as exporter:
            tracing.reset()
            declare()  # the replica queue and its bindings, before anything is published
            capture = CaptureQueue(exchange, ["simplest"], name=unique("trace_capture"))
            with otel_trace.get_tracer("tests").start_as_current_span("POST /things") as parent:
                SimplestModel.objects.create(name="traced")
            trace_id = f"{parent.get_span_context().trace_id:032x}"

            # the message as RabbitMQ holds it: the context in the headers, the body unchanged
            wait_until(lambda: capture.count() == 1, 10, message="the captured message")
            method, properties, body = capture.channel.basic_get(capture.name, auto_ack=True)
            assert isinstance(properties, pika.BasicProperties)
            assert properties.headers["traceparent"].split("-")[1] == trace_id  # kombu: AMQP headers too
            assert set(json.loads(body)) == {
                "signal_type", "cqrs_id", "instance_data", "previous_data", "instance_pk",
                "correlation_id", "retries", "expires", "meta",
            }

            run_consumer(until=lambda: SimplestModelRef.objects.filter(name="traced").exists(), timeout=20)
            spans = exporter.get_finished_spans()
        assert SimplestModelRef.objects.filter(name="traced").exists()
        [child] = [s for s in spans if s.name == "simplest process"]
        assert f"{child.context.trace_id:032x}" == trace_id
        assert child.attributes["messaging.system"] == "rabbitmq"
        assert child.attributes["messaging.destination.name"] == queue
        assert child.attributes["cqrs.id"] == "simplest"
        batch = next(s for s in spans if s.name == f"{queue} process")
        assert [f"{link.context.trace_id:032x}" for link in batch.links] == [trace_id]
    finally:
        tracing.reset()
        if capture is not None:
            capture.close()
        rabbit_cleanup(exchange, [queue, f"dead_letter_{queue}"])
