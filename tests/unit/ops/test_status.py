"""``cqrs_status`` and :mod:`dj_cqrs.ops.status` with the in-memory transport."""

from __future__ import annotations

import datetime
import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from dj_cqrs.checks import check_settings
from dj_cqrs.models import OutboxEvent
from dj_cqrs.ops import status
from dj_cqrs.ops.broker import QueueStats, estimate_lag
from tests.unit.conftest import cqrs_with

pytestmark = pytest.mark.django_db(transaction=True)


def _pending(cqrs_id="simplest", age=0.0, attempts=0, error="", published=False):
    now = timezone.now()
    return OutboxEvent.objects.create(
        created_at=now - datetime.timedelta(seconds=age),
        cqrs_id=cqrs_id,
        signal_type="SAVE",
        object_pk="1",
        revision=0,
        published_at=now if published else None,
        attempts=attempts,
        last_error=error,
    )


def _run(*args):
    out = StringIO()
    try:
        call_command("cqrs_status", *args, stdout=out)
    except SystemExit as exc:
        return exc.code, out.getvalue()
    return 0, out.getvalue()


def test_healthy_service_reports_every_master_model_and_the_queue(transport):
    code, out = _run("--json")
    assert code == 0
    data = json.loads(out)
    assert data["healthy"] is True and data["exit_code"] == 0
    outbox = {item["cqrs_id"]: item for item in data["outbox"]}
    assert outbox["simplest"] == {
        "database": "default",
        "cqrs_id": "simplest",
        "pending": 0,
        "oldest_pending_age": None,
        "failed": 0,
        "last_error": "",
    }
    assert data["replica"]["queue"]["name"] == "replica"
    assert data["replica"]["queue"]["ready"] == 0
    assert data["replica"]["dead_letters"] == 0
    assert data["breaches"] == [] and data["unreachable"] == []


def test_pending_age_and_failures_per_cqrs_id(transport):
    _pending(age=100)
    _pending(age=10, attempts=2, error="ConnectionFailed('down')")
    _pending(age=1000, published=True)  # published rows do not count
    _pending("basic", age=5)
    result = status.collect(status.Thresholds())
    by_id = {item.cqrs_id: item for item in result.outbox}
    assert by_id["simplest"].pending == 2
    assert 99 <= by_id["simplest"].oldest_pending_age < 110
    assert by_id["simplest"].failed == 1
    assert by_id["simplest"].last_error == "ConnectionFailed('down')"
    assert by_id["basic"].pending == 1 and by_id["basic"].failed == 0
    assert result.exit_code == 0  # no threshold


def test_old_backlog_crosses_max_outbox_age(transport):
    _pending(age=400)
    code, out = _run()  # the default max_outbox_age is 300 s
    assert code == status.UNHEALTHY
    assert (
        "UNHEALTHY outbox default/simplest: the oldest pending event is 400s old (limit 300s)"
        in out
    )
    assert _run("--max-outbox-age", "1000")[0] == 0


def test_thresholds_from_settings_and_options(transport):
    for _ in range(3):
        _pending(age=1)
    with override_settings(CQRS=cqrs_with(status={"max_outbox_pending": 2})):
        code, out = _run("--json")
        assert code == 1
        [breach] = json.loads(out)["breaches"]
        assert (
            breach["threshold"] == "max_outbox_pending"
            and breach["value"] == 3
            and breach["limit"] == 2
        )
        assert _run("--max-outbox-pending", "3")[0] == 0


def test_dead_letters_and_ready_messages(transport):
    transport.send_raw(b"not json", "simplest")
    transport.join()  # malformed: dead-lettered
    transport.send_raw(b"{}", "simplest")  # stays ready
    code, out = _run("--json", "--max-dead-letters", "0", "--replica-only")
    assert code == 1
    data = json.loads(out)
    assert data["outbox"] == []
    assert data["replica"]["dead_letters"] == 1
    assert data["replica"]["queue"]["ready"] == 1
    assert [b["threshold"] for b in data["breaches"]] == ["max_dead_letters"]
    assert _run("--max-dead-letters", "1", "--replica-only")[0] == 0


def test_master_only_skips_the_broker(transport):
    result = status.collect(status.Thresholds(), replica=False)
    assert result.replica is None


def test_unreachable_broker_exits_3(transport, monkeypatch):
    from dj_cqrs.exceptions import ConnectionFailed

    def down(_transport):
        raise ConnectionFailed("cannot connect to RabbitMQ")

    monkeypatch.setattr(status, "queue_stats", down)
    _pending(age=400)  # a crossed threshold too: the highest code wins
    code, out = _run()
    assert code == status.BROKER_UNREACHABLE
    assert "UNREACHABLE broker replica: cannot connect to RabbitMQ" in out


def test_lag_estimate_and_stalled_queue():
    stats = QueueStats("q", ready=0, ack_rate=0.0)
    estimate_lag(stats)
    assert (stats.lag, stats.stalled) == (0.0, False)
    stats = QueueStats("q", ready=100, ack_rate=20.0)
    estimate_lag(stats)
    assert stats.lag == 5.0
    stats = QueueStats("q", ready=100, ack_rate=0.0)
    estimate_lag(stats)
    assert (stats.lag, stats.stalled) == (None, True)


def test_lag_counts_the_messages_the_consumers_hold_unacknowledged():
    # Each worker prefetches up to 1,000 messages: a slow consumer's backlog is unacknowledged
    # while none is ready, and a hung one acknowledges nothing.
    stats = QueueStats("q", ready=0, unacked=2000, ack_rate=10.0)
    estimate_lag(stats)
    assert (stats.lag, stats.stalled) == (200.0, False)
    stats = QueueStats("q", ready=0, unacked=5, ack_rate=0.0)
    estimate_lag(stats)
    assert (stats.lag, stats.stalled) == (None, True)
    stats = QueueStats("q", ready=0, unacked=0, ack_rate=0.0)
    estimate_lag(stats)
    assert (stats.lag, stats.stalled) == (0.0, False)


def test_lag_threshold(transport, monkeypatch):
    from dj_cqrs.ops.broker import BrokerStats

    def stats(lag, stalled=False, exists=True):
        return lambda _t: BrokerStats(
            QueueStats("replica", exists=exists, ready=5, lag=lag, stalled=stalled), "dlq", 0
        )

    monkeypatch.setattr(status, "queue_stats", stats(30.0))
    assert [b.threshold for b in status.collect(status.Thresholds(max_lag=10)).breaches] == [
        "max_lag"
    ]
    assert status.collect(status.Thresholds(max_lag=60)).breaches == []
    monkeypatch.setattr(status, "queue_stats", stats(None, stalled=True))
    assert "none acknowledged" in status.collect(status.Thresholds(max_lag=60)).breaches[0].message
    monkeypatch.setattr(status, "queue_stats", stats(None))
    result = status.collect(status.Thresholds(max_lag=60))
    assert result.breaches == [] and "lag unknown" in result.notes[-1]
    monkeypatch.setattr(status, "queue_stats", stats(None, exists=False))
    assert status.collect(status.Thresholds()).breaches[0].threshold == "queue"


def test_text_report(transport):
    _pending(age=5, attempts=1, error="boom")
    code, out = _run()
    assert code == 0
    assert "default\tsimplest\t1\t" in out and "last error: boom" in out
    assert "replica\t0\t0\t?\t0.0s" in out
    assert out.rstrip().endswith("healthy")


def test_negative_option_is_a_usage_error(transport):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError):
        call_command("cqrs_status", "--max-lag", "-1")


@pytest.mark.parametrize(
    "section",
    [
        {"max_outbox_age": -1},
        {"max_dead_letters": 1.5},
        {"management_url": "ftp://x"},
        {"timeout": 0},
        "nope",
    ],
)
def test_bad_status_settings_are_reported_as_e090(section):
    with override_settings(CQRS=cqrs_with(status=section)):
        ids = [m.id for m in check_settings()]
    assert "dj_cqrs.E090" in ids


def test_good_status_settings_pass_the_checks():
    section = {
        "max_outbox_age": 60,
        "max_lag": 5.5,
        "max_dead_letters": 0,
        "management_url": False,
        "timeout": 2,
    }
    with override_settings(CQRS=cqrs_with(status=section)):
        assert [m.id for m in check_settings()] == []
