"""Prometheus recorders (dj_cqrs.metrics) on the memory transport: what each outcome counts."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from django.db import transaction
from django.test import override_settings

from dj_cqrs import metrics
from dj_cqrs.master.relay import Relay
from tests.apps.master_app.models import SimplestModel
from tests.unit.conftest import cqrs_with
from tests.unit.replica.helpers import row, send

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def enabled():
    """Metrics on (``CQRS["metrics"] = True``) in this process; the recorder's registry."""
    with override_settings(CQRS=cqrs_with(metrics=True)):
        recorder = metrics.recorder()
        assert isinstance(recorder, metrics.PrometheusRecorder)
        yield recorder.registry
    metrics.reset()


def value(registry, name, **labels):
    return registry.get_sample_value(name, labels) or 0.0


def test_disabled_by_default_is_the_noop_recorder():
    metrics.reset()
    assert metrics.recorder() is metrics.NOOP
    assert metrics.recorder().enabled is False


def test_master_publish_and_publish_failures_are_counted_per_cqrs_id(enabled, transport):
    published = value(enabled, "cqrs_published_total", cqrs_id="simplest")
    failed = value(enabled, "cqrs_publish_failures_total", cqrs_id="simplest")
    SimplestModel.objects.create(name="a")
    with transaction.atomic():
        SimplestModel.objects.create(name="b")
        SimplestModel.objects.create(name="c")
    assert value(enabled, "cqrs_published_total", cqrs_id="simplest") == published + 3

    transport.fail_with = ConnectionError("broker down")
    SimplestModel.objects.create(name="d")  # stays in the outbox
    assert value(enabled, "cqrs_publish_failures_total", cqrs_id="simplest") == failed + 1
    transport.fail_with = None
    assert Relay(min_age=0).run_once() == 1
    assert value(enabled, "cqrs_published_total", cqrs_id="simplest") == published + 4


def test_replica_outcomes_histograms_and_bounded_labels(enabled, transport):
    applied = value(enabled, "cqrs_messages_applied_total", cqrs_id="simplest")
    duplicate = value(
        enabled, "cqrs_messages_ignored_total", cqrs_id="simplest", reason="duplicate"
    )
    stale = value(enabled, "cqrs_messages_ignored_total", cqrs_id="simplest", reason="stale")
    retried = value(
        enabled, "cqrs_messages_retried_total", cqrs_id="always_failing", reason="exception"
    )
    dead = value(enabled, "cqrs_dead_letters_total", cqrs_id="always_failing", reason="max_retries")
    malformed = value(enabled, "cqrs_dead_letters_total", cqrs_id="unknown", reason="invalid_json")
    unknown_id = value(
        enabled, "cqrs_dead_letters_total", cqrs_id="unknown", reason="unknown_cqrs_id"
    )
    batches = value(enabled, "cqrs_batch_size_count")
    lag_count = value(enabled, "cqrs_replica_lag_seconds_count", cqrs_id="simplest")
    lag_sum = value(enabled, "cqrs_replica_lag_seconds_sum", cqrs_id="simplest")

    recent = (
        datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=30)
    ).isoformat()
    send(transport, "SAVE", {**row(1, 2, name="a"), "cqrs_updated": recent})
    send(transport, "SAVE", {**row(1, 2, name="a"), "cqrs_updated": recent})  # same revision
    send(transport, "SAVE", row(1, 1, name="old"))  # older revision
    send(transport, "SAVE", row(1, 0), "always_failing")  # 3 retries, then a dead letter
    transport.send_raw(b"not json", "simplest")
    transport.send_raw(
        b'{"signal_type": "SAVE", "cqrs_id": "pk-12345", "instance_data": {}, "instance_pk": 1}',
        "x",
    )
    transport.join()

    assert value(enabled, "cqrs_messages_applied_total", cqrs_id="simplest") == applied + 1
    assert (
        value(enabled, "cqrs_messages_ignored_total", cqrs_id="simplest", reason="duplicate")
        == duplicate + 1
    )
    assert (
        value(enabled, "cqrs_messages_ignored_total", cqrs_id="simplest", reason="stale")
        == stale + 1
    )
    assert (
        value(enabled, "cqrs_messages_retried_total", cqrs_id="always_failing", reason="exception")
        == retried + 3
    )
    assert (
        value(enabled, "cqrs_dead_letters_total", cqrs_id="always_failing", reason="max_retries")
        == dead + 1
    )
    assert (
        value(enabled, "cqrs_dead_letters_total", cqrs_id="unknown", reason="invalid_json")
        == malformed + 1
    )
    # an unknown CQRS_ID is not a label value of its own (no unbounded labels)
    assert (
        value(enabled, "cqrs_dead_letters_total", cqrs_id="unknown", reason="unknown_cqrs_id")
        == unknown_id + 1
    )
    assert (
        value(enabled, "cqrs_dead_letters_total", cqrs_id="pk-12345", reason="unknown_cqrs_id") == 0
    )
    assert value(enabled, "cqrs_batch_size_count") >= batches + 7
    assert value(enabled, "cqrs_apply_seconds_count") >= value(enabled, "cqrs_batch_size_count")
    # lag: now - cqrs_updated of the applied message (about 30 s)
    assert value(enabled, "cqrs_replica_lag_seconds_count", cqrs_id="simplest") == lag_count + 1
    lag = value(enabled, "cqrs_replica_lag_seconds_sum", cqrs_id="simplest") - lag_sum
    assert 29 < lag < 60


def test_exposition_is_prometheus_text_with_extra_collectors(enabled):
    body, content_type = metrics.exposition(
        [metrics.OutboxCollector(lambda: [("simplest", 3, 12.5)])]
    )
    text = body.decode()
    assert content_type.startswith("text/plain")
    assert 'cqrs_outbox_pending{cqrs_id="simplest"} 3.0' in text
    assert 'cqrs_outbox_oldest_pending_seconds{cqrs_id="simplest"} 12.5' in text
    assert "# TYPE cqrs_published_total counter" in text
    assert "# TYPE cqrs_replica_lag_seconds histogram" in text


def test_metrics_server_serves_the_exposition(enabled):
    import urllib.error
    import urllib.request

    server = metrics.MetricsServer(
        0, "127.0.0.1", [metrics.OutboxCollector(lambda: [("x", 1, 0.0)])]
    )
    server.start()
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{server.port}/metrics", timeout=5
        ) as response:
            text = response.read().decode()
        assert 'cqrs_outbox_pending{cqrs_id="x"} 1.0' in text
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/other", timeout=5)
        assert error.value.code == 404
    finally:
        server.stop()


SCRIPT = """
import os, sys
import django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
django.setup()
{body}
"""


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child process: the unit test settings on an in-memory SQLite."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return {**env, "DJANGO_SETTINGS_MODULE": "tests.settings", **extra}


def run_python(body: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT.format(body=textwrap.dedent(body))],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_nothing_is_imported_when_disabled_or_not_installed():
    """Metrics off: prometheus-client is never imported. opentelemetry missing (blocked here):
    events are published and applied, nothing traced, no error."""
    body = """
    sys.modules["opentelemetry"] = None  # as if not installed
    from django.core.management import call_command
    call_command("migrate", verbosity=0)
    from dj_cqrs.testing import use_memory_transport
    from tests.apps.master_app.models import SimplestModel
    from tests.apps.replica_app.models import SimplestModelRef
    with use_memory_transport() as transport:
        SimplestModel.objects.create(name="a")
        transport.join(fail_fast=True)
        assert transport.published[0].headers == {}, transport.published[0].headers
    assert SimplestModelRef.objects.get().name == "a"
    from dj_cqrs import tracing
    assert not tracing.active()
    assert "prometheus_client" not in sys.modules
    print("OK")
    """
    result = run_python(body)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK"


def test_enabled_without_prometheus_client_warns_once_and_records_nothing():
    body = """
    sys.modules["prometheus_client"] = None  # as if not installed
    import logging
    logging.getLogger("django-cqrs.metrics").addHandler(logging.StreamHandler())
    from dj_cqrs import metrics
    metrics.enable_for_processes()
    assert metrics.recorder() is metrics.NOOP
    metrics.reset()
    assert metrics.recorder() is metrics.NOOP
    print("OK")
    """
    result = run_python(body)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OK"
    assert result.stderr.count("prometheus-client is not installed") == 1


def test_two_processes_aggregate_through_the_multiprocess_directory(tmp_path, monkeypatch):
    """Two worker processes write counters and the live gauge to PROMETHEUS_MULTIPROC_DIR; the
    exposition sums them; a dead worker's live gauge goes with mark_process_dead."""
    body = """
    from dj_cqrs import metrics
    from dj_cqrs.core.messages import Action, Outcome
    from dj_cqrs.core.payload import TransportPayload
    metrics.enable_for_processes()
    rec = metrics.recorder()
    assert isinstance(rec, metrics.PrometheusRecorder), rec
    rec.worker_started()
    n = int(os.environ["N"])
    rec.published([TransportPayload("SAVE", "simplest", {{}}, 1)] * n)
    payload = TransportPayload("SAVE", "simplest", {{"cqrs_updated": "2020-01-01T00:00:00+00:00"}}, 1)
    rec.batch([Outcome(Action.ACK, payload=payload, status="applied")] * n, 0.01, {{"simplest"}})
    print(os.getpid())
    """.replace("{{", "{").replace("}}", "}")
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    first = subprocess.Popen(
        [sys.executable, "-c", SCRIPT.format(body=textwrap.dedent(body))],
        cwd=ROOT,
        env=child_env(**env, N="2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    second = subprocess.Popen(
        [sys.executable, "-c", SCRIPT.format(body=textwrap.dedent(body))],
        cwd=ROOT,
        env=child_env(**env, N="5"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pids = []
    for process in (first, second):
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        pids.append(int(out.strip()))

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    text = metrics.exposition()[0].decode()
    assert 'cqrs_published_total{cqrs_id="simplest"} 7.0' in text
    assert 'cqrs_messages_applied_total{cqrs_id="simplest"} 7.0' in text
    assert "cqrs_batch_size_count 2.0" in text
    assert 'cqrs_replica_lag_seconds_count{cqrs_id="simplest"} 7.0' in text
    assert "cqrs_consumer_workers 2.0" in text  # livesum of the two processes' files

    metrics.mark_process_dead(pids[0])
    text = metrics.exposition()[0].decode()
    assert "cqrs_consumer_workers 1.0" in text
    assert 'cqrs_published_total{cqrs_id="simplest"} 7.0' in text  # counters stay


def test_multiprocess_dir_is_created_and_removed(monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    with metrics.multiprocess_dir() as path:
        assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == path and os.path.isdir(path)
    assert not os.path.exists(path) and "PROMETHEUS_MULTIPROC_DIR" not in os.environ


def test_an_existing_multiprocess_dir_is_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "m"))
    with metrics.multiprocess_dir() as path:
        assert path == str(tmp_path / "m")
    assert os.path.isdir(path)


def test_metrics_server_binds_an_ipv6_address(enabled):
    import socket
    import urllib.request

    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    try:
        server = metrics.MetricsServer(0, "::1")
    except OSError as exc:  # IPv6 turned off in this kernel
        if "Address family" in str(exc):
            raise  # the server did not ask for IPv6
        pytest.skip(f"no IPv6 loopback: {exc}")
    server.start()
    try:
        with urllib.request.urlopen(f"http://[::1]:{server.port}/metrics", timeout=5) as response:
            assert response.status == 200
    finally:
        server.stop()


@pytest.mark.parametrize(
    "values",
    [
        [0.0, 0.001, 0.5, 0.5, 1.0, 2.5, 7.0, 60.0, 3600.0, 1e9],
        [0.25] * 50,
        [],
    ],
)
def test_observe_many_equals_one_observe_per_value(values):
    """The batched histogram update (one write per bucket and one to the sum) leaves exactly what
    an ``observe`` per value leaves, bucket bounds included (``value <= bound``)."""
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from dj_cqrs.metrics.recording import LAG_SECONDS_BUCKETS, observe_many

    def exposition(record) -> bytes:
        registry = CollectorRegistry()
        histogram = Histogram(
            "lag", "lag", ["cqrs_id"], buckets=LAG_SECONDS_BUCKETS, registry=registry
        )
        record(histogram.labels("product"), values)
        return b"\n".join(
            line for line in generate_latest(registry).splitlines() if b"_created" not in line
        )

    def one_by_one(child, vals):
        for value in vals:
            child.observe(value)

    assert exposition(observe_many) == exposition(one_by_one)
    assert 1.0 in LAG_SECONDS_BUCKETS or 0.5 in LAG_SECONDS_BUCKETS  # some values sit on a bound


def test_observe_many_falls_back_to_observe_without_the_bucket_values():
    from dj_cqrs.metrics.recording import observe_many

    class Plain:
        def __init__(self) -> None:
            self.seen: list[float] = []

        def observe(self, value: float) -> None:
            self.seen.append(value)

    plain = Plain()
    observe_many(plain, [3.0, 1.0])
    assert plain.seen == [3.0, 1.0]
