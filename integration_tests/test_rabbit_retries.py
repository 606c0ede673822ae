"""Retries, back-off, expiry and dead letters on the real RabbitMQ, consumer in the pytest process."""

from __future__ import annotations

import io
import json
import logging

import pytest
from django.test import override_settings

from integration_tests.failure_helpers import body, declare, names, rabbit, rabbit_cqrs, run_consumer
from integration_tests.harness import rabbit_cleanup

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def broker(rabbitmq):
    from tests.apps.replica_app.models import FlakyModelRef

    FlakyModelRef.fail_times = FlakyModelRef.attempts = 0
    exchange, queue = names("rt")
    yield exchange, queue
    rabbit_cleanup(exchange, [queue, f"dead_letter_{queue}"])


def outcome_records(caplog, action):
    return [r for r in caplog.records if getattr(r, "cqrs_outcome", None) == action]


def test_fails_n_times_then_applies_with_backoff(broker, caplog):
    from tests.apps.replica_app.models import FlakyModelRef

    exchange, queue = broker
    caplog.set_level(logging.INFO, logger="django-cqrs")
    FlakyModelRef.fail_times = 3
    settings = rabbit_cqrs(exchange, queue, CQRS_RETRY_DELAY=0.2, CQRS_RETRY_BACKOFF=2, CQRS_RETRY_MAX_DELAY=0.5)
    with override_settings(CQRS=settings), rabbit() as client:
        declare()
        client.publish(exchange, "simplest_flaky", body("simplest_flaky", 1, data={"name": "flaky"}, correlation_id="c-1"))
        consumer = run_consumer(max_messages=4, timeout=30)
        assert not consumer.timed_out
        assert FlakyModelRef.objects.get(pk=1).name == "flaky"
        assert FlakyModelRef.attempts == 4
        retries = outcome_records(caplog, "retry")
        assert [r.cqrs_retries for r in retries] == [0, 1, 2]
        assert [r.cqrs_delay for r in retries] == [0.2, 0.4, 0.5]
        assert all(r.cqrs_correlation_id == "c-1" and r.cqrs_pk == 1 for r in retries)
        applied = outcome_records(caplog, "ack")
        assert [(r.cqrs_retries, r.cqrs_status) for r in applied] == [(3, "applied")]
        observed = [round(b.created - a.created, 3) for a, b in zip(retries, retries[1:] + applied)]
        print(f"observed gaps between attempts (s): {observed}")
        for ms in (200, 400, 500):
            assert client.exists(f"{queue}.retry.{ms}")
        assert client.count(f"dead_letter_{queue}") == 0


def test_always_failing_is_dead_lettered_once_then_retried_by_command(broker, caplog):
    from django.core.management import call_command

    from tests.apps.replica_app.models import FlakyModelRef

    exchange, queue = broker
    dlq = f"dead_letter_{queue}"
    caplog.set_level(logging.INFO, logger="django-cqrs")
    FlakyModelRef.fail_times = 10**6
    settings = rabbit_cqrs(exchange, queue, CQRS_MAX_RETRIES=2, CQRS_RETRY_DELAY=0.1)
    with override_settings(CQRS=settings), rabbit() as client:
        declare()
        original = body("simplest_flaky", 7, data={"name": "seven"}, correlation_id="c-7")
        client.publish(exchange, "simplest_flaky", original)
        consumer = run_consumer(max_messages=3, timeout=30)
        assert not consumer.timed_out
        assert FlakyModelRef.attempts == 3
        assert not FlakyModelRef.objects.filter(pk=7).exists()
        letters = client.drain(dlq)
        assert len(letters) == 1
        _, properties, dead_body = letters[0]
        headers = properties.headers
        assert headers["x-cqrs-reason"] == "max_retries"
        assert headers["x-cqrs-failure"] == "exception"
        assert headers["x-cqrs-exception"] == "builtins.RuntimeError"
        assert headers["x-cqrs-error"] == "RuntimeError: flaky failure 3"
        assert headers["x-cqrs-retries"] == 2
        assert headers["x-cqrs-routing-key"] == "simplest_flaky"
        assert headers["x-cqrs-first-failure"] <= headers["x-cqrs-last-failure"]
        assert headers["x-cqrs-worker"] and headers["x-cqrs-queue"] == queue
        assert "x-death" not in headers
        assert properties.expiration == str(864000 * 1000)
        assert json.loads(dead_body) == dict(original, retries=2)
        assert [r.cqrs_retries for r in outcome_records(caplog, "dead_letter")] == [2]

        # Put it back, fix the model, and bring it back with the command.
        client.publish("", dlq, dead_body, headers=headers)
        out = io.StringIO()
        call_command("cqrs_dead_letters", "count", stdout=out)
        assert out.getvalue().strip() == "1"
        out = io.StringIO()
        call_command("cqrs_dead_letters", "dump", stdout=out, stderr=io.StringIO())
        assert [json.loads(line) for line in out.getvalue().splitlines()] == [dict(original, retries=2)]
        FlakyModelRef.fail_times = 0
        out = io.StringIO()
        call_command("cqrs_dead_letters", "retry", stdout=out)
        assert out.getvalue().startswith("Retried 1 dead letters")
        assert client.count(dlq) == 0
        caplog.clear()
        consumer = run_consumer(max_messages=1, timeout=30)
        assert FlakyModelRef.objects.get(pk=7).name == "seven"
        applied = outcome_records(caplog, "ack")
        assert [(r.cqrs_retries, r.cqrs_status, r.cqrs_correlation_id) for r in applied] == [(0, "applied", "c-7")]
        assert client.count(dlq) == 0
