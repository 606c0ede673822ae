"""Retry policy, failure classification, failure headers and dead letters (memory transport)."""

from __future__ import annotations

import decimal
import io
import json
import logging
import math

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, InterfaceError, OperationalError
from django.test import override_settings

from dj_cqrs import encoding
from dj_cqrs.conf import validate
from dj_cqrs.core.dead_letter_store import DeadLetter
from dj_cqrs.core.messages import HARD_MAX_DELAY, Action, InboundMessage, Outcome
from dj_cqrs.core.settlement import carried_headers, failure_headers, retry_body
from dj_cqrs.replica import dead_letters
from dj_cqrs.replica.consumer import handle
from dj_cqrs.replica.failures import is_connection_lost
from dj_cqrs.replica.retry import default_retry_delay, sanitize_delay
from tests.apps.replica_app.models import FlakyModelRef, SimplestModelRef


def _settings(**replica):
    return {
        "transport": "dj_cqrs.transport.memory.MemoryTransport",
        "queue": "replica",
        "replica": replica,
    }


def _message(payload, routing_key="simplest", headers=None):
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return InboundMessage(raw, routing_key, headers or {})


def _body(cqrs_id="simplest", pk=1, **overrides):
    data = {
        "signal_type": "SAVE",
        "cqrs_id": cqrs_id,
        "instance_data": {"id": pk, "name": "x", "cqrs_revision": 0, "cqrs_updated": "2026-01-01 00:00:00+00:00"},
        "previous_data": None,
        "instance_pk": pk,
        "correlation_id": "corr",
        "retries": 0,
        "expires": None,
        "meta": {},
    }
    data.update(overrides)
    return data


# -- policy ----------------------------------------------------------------------------------------


def test_default_delay_is_constant_like_django_cqrs():
    with override_settings(CQRS=_settings()):
        assert [default_retry_delay(n) for n in range(5)] == [2, 2, 2, 2, 2]
        assert FlakyModelRef.get_cqrs_retry_delay(7) == 2


def test_exponential_backoff_is_capped():
    with override_settings(CQRS=_settings(CQRS_RETRY_DELAY=1, CQRS_RETRY_BACKOFF=2, CQRS_RETRY_MAX_DELAY=10)):
        assert [default_retry_delay(n) for n in range(7)] == [1, 2, 4, 8, 10, 10, 10]
        assert default_retry_delay(10**6) == 10  # no overflow
        assert FlakyModelRef.get_cqrs_retry_delay(3) == 8


def test_cap_never_shortens_the_base_delay():
    with override_settings(CQRS=_settings(CQRS_RETRY_DELAY=30, CQRS_RETRY_BACKOFF=3, CQRS_RETRY_MAX_DELAY=5)):
        assert [default_retry_delay(n) for n in range(3)] == [30, 30, 30]
    with override_settings(CQRS=_settings(CQRS_RETRY_DELAY=0, CQRS_RETRY_BACKOFF=3)):
        assert default_retry_delay(4) == 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1.5, 1.5), (-3, 0.0), (math.nan, 0.0), ("abc", 0.0), (None, 0.0), (math.inf, HARD_MAX_DELAY), (10**12, HARD_MAX_DELAY)],
)
def test_sanitize_delay(value, expected):
    assert sanitize_delay(value) == expected


@pytest.mark.parametrize(
    ("key", "value"),
    [("CQRS_RETRY_BACKOFF", 0.5), ("CQRS_RETRY_BACKOFF", "2"), ("CQRS_RETRY_MAX_DELAY", -1), ("CQRS_RETRY_MAX_DELAY", None)],
)
def test_invalid_backoff_settings_are_reported(key, value):
    problems = validate(_settings(**{key: value}), has_masters=False, has_replicas=True)
    assert [p.id for p in problems] == ["dj_cqrs.E008"]
    assert key in problems[0].msg


def test_transport_options_must_be_a_dict():
    raw = dict(_settings(), transport_options=["visibility_timeout", 5])
    assert [p.id for p in validate(raw, has_masters=False, has_replicas=True)] == ["dj_cqrs.E005"]
    assert validate(dict(_settings(), transport_options={"visibility_timeout": 5}), has_masters=False, has_replicas=True) == []


# -- classification --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_broken_hooks_do_not_kill_the_worker(monkeypatch):
    FlakyModelRef.fail_times = 10
    monkeypatch.setattr(FlakyModelRef, "get_cqrs_retry_delay", classmethod(lambda cls, n: "soon"))
    outcome = handle(_message(_body("simplest_flaky"), "simplest_flaky"))
    assert (outcome.action, outcome.delay, outcome.reason) == (Action.RETRY, 0.0, "exception")

    def broken(cls, current_retry, exception=None):
        raise ZeroDivisionError("hook bug")

    monkeypatch.setattr(FlakyModelRef, "should_retry_cqrs", classmethod(broken))
    outcome = handle(_message(_body("simplest_flaky"), "simplest_flaky"))
    assert (outcome.action, outcome.reason, outcome.failure) == (Action.DEAD_LETTER, "max_retries", "exception")
    assert isinstance(outcome.exception, RuntimeError)


@pytest.mark.django_db
def test_unappliable_data_is_dead_lettered_without_retries():
    data = _body(instance_data={"id": 1, "name": "no revision"})
    outcome = handle(_message(data))
    assert (outcome.action, outcome.reason) == (Action.DEAD_LETTER, "missing_cqrs_fields")


@pytest.mark.django_db(transaction=True)
def test_falsy_handler_is_retried_then_dead_lettered(monkeypatch):
    monkeypatch.setattr(SimplestModelRef, "cqrs_save", classmethod(lambda cls, data, **kwargs: False))
    outcome = handle(_message(_body()))
    assert (outcome.action, outcome.reason) == (Action.RETRY, "handler_returned_falsy")
    outcome = handle(_message(_body(retries=3)))
    assert (outcome.action, outcome.reason, outcome.failure) == (Action.DEAD_LETTER, "max_retries", "handler_returned_falsy")
    assert not SimplestModelRef.objects.exists()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"[" * 5000, "invalid_json"),
        (b"\xc3\x28", "invalid_json"),
        (b"3", "not_an_object"),
        (json.dumps(_body(expires="2026-02-30T00:00:00+00:00")).encode(), "bad_expires"),
        (json.dumps(_body(expires="1999-01-01T00:00:00+00:00")).encode(), "expired"),
        (json.dumps(_body("unknown")).encode(), "unknown_cqrs_id"),
    ],
)
@pytest.mark.django_db
def test_malformed_messages_have_a_reason(raw, reason):
    outcome = handle(InboundMessage(raw, "simplest"))
    assert (outcome.action, outcome.reason) == (Action.DEAD_LETTER, reason)
    assert outcome.detail


def test_too_large_is_configurable():
    with override_settings(CQRS=_settings(max_message_bytes=100)):
        outcome = handle(_message(_body()))
    assert (outcome.action, outcome.reason) == (Action.DEAD_LETTER, "too_large")


def test_connection_lost_classification():
    assert is_connection_lost(InterfaceError("connection already closed"))
    assert is_connection_lost(OperationalError("server closed the connection unexpectedly"))
    assert is_connection_lost(OperationalError("FATAL: terminating connection due to administrator command"))
    assert not is_connection_lost(IntegrityError("duplicate key value"))
    assert not is_connection_lost(OperationalError("canceling statement due to statement timeout"))
    try:
        try:
            raise InterfaceError("cursor already closed")
        except InterfaceError as inner:
            raise RuntimeError("wrapped by a handler") from inner
    except RuntimeError as outer:
        assert is_connection_lost(outer)


@pytest.mark.django_db
def test_database_unavailable_keeps_the_message(monkeypatch):
    def lost(*args, **kwargs):
        raise OperationalError("could not connect to server: Connection refused")

    monkeypatch.setattr(SimplestModelRef, "cqrs_save", classmethod(lost))
    outcome = handle(_message(_body()))
    assert (outcome.action, outcome.reason) == (Action.REQUEUE, "database_unavailable")


# -- headers and bodies ----------------------------------------------------------------------------


def test_failure_headers():
    message = InboundMessage(
        b"{}",
        "replica",  # the routing key RabbitMQ uses when a retry queue dead-letters it back
        {
            "x-cqrs-routing-key": "cqrs.replica.simplest",
            "x-cqrs-first-failure": "2026-01-01T00:00:00.000+00:00",
            "x-death": [{"count": 1}],
            "x-first-death-queue": "replica.retry.2000",
            "x-cqrs-not-before": 1.0,
            "custom": "kept",
        },
    )
    from dj_cqrs.dataclasses import TransportPayload

    payload = TransportPayload.from_message(_body(retries=4))
    headers = failure_headers(message, Outcome(Action.DEAD_LETTER, reason="max_retries", failure="exception", detail="KeyError: 'x'", payload=payload, exception=KeyError("x")))
    assert headers["x-cqrs-routing-key"] == "cqrs.replica.simplest"
    assert headers["x-cqrs-first-failure"] == "2026-01-01T00:00:00.000+00:00"
    assert headers["x-cqrs-last-failure"] > headers["x-cqrs-first-failure"]
    assert headers["x-cqrs-reason"] == "max_retries"
    assert headers["x-cqrs-failure"] == "exception"
    assert headers["x-cqrs-exception"] == "builtins.KeyError"
    assert headers["x-cqrs-error"] == "KeyError: 'x'"
    assert headers["x-cqrs-retries"] == 4
    assert headers["x-cqrs-worker"]
    assert headers["custom"] == "kept"
    assert not any(k == "x-death" or k.startswith("x-first-death") for k in headers)
    assert "x-cqrs-not-before" not in headers
    first = failure_headers(InboundMessage(b"{}", "simplest"), Outcome(Action.RETRY, reason="exception"))
    assert first["x-cqrs-routing-key"] == "simplest"
    assert first["x-cqrs-first-failure"] == first["x-cqrs-last-failure"]
    assert carried_headers({"x-death": 1, "x-last-death-reason": "expired", "a": 1}) == {"a": 1}


def test_retry_body_increments_retries_and_keeps_exact_decimals():
    from dj_cqrs.dataclasses import TransportPayload

    data = encoding.loads(b'{"signal_type":"SAVE","cqrs_id":"basic","instance_data":{"decimal_field":12345678901234.123456789},"instance_pk":1,"retries":2,"expires":null}')
    body = encoding.loads(retry_body(TransportPayload.from_message(data)))
    assert body["retries"] == 3
    assert body["instance_data"]["decimal_field"].as_decimal() == decimal.Decimal("12345678901234.123456789")
    assert body["meta"] is None and body["expires"] is None


# -- logging ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_one_structured_line_per_outcome(caplog):
    caplog.set_level(logging.INFO, logger="django-cqrs")
    handle(_message(_body(pk=5)))
    handle(_message(_body(pk=5)))  # same revision again: ignored
    handle(InboundMessage(b"nope", "simplest"))
    lines = [r for r in caplog.records if hasattr(r, "cqrs_outcome")]
    assert [(r.cqrs_outcome, r.cqrs_status, r.cqrs_reason) for r in lines] == [
        ("ack", "applied", ""),
        ("ack", "ignored_duplicate", ""),
        ("dead_letter", "", "invalid_json"),
    ]
    assert all(r.cqrs_id == "simplest" and r.cqrs_pk == 5 and r.cqrs_revision == 0 for r in lines[:2])
    assert lines[0].cqrs_correlation_id == "corr" and lines[0].cqrs_retries == 0
    assert lines[2].cqrs_id is None and lines[2].cqrs_routing_key == "simplest"


# -- dead letters through the memory transport -----------------------------------------------------


def _command(*args):
    out = io.StringIO()
    call_command("cqrs_dead_letters", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_dead_letters_on_the_memory_transport(transport):
    FlakyModelRef.fail_times = 10**6
    transport.send_raw(json.dumps(_body("simplest_flaky", 3)).encode(), "simplest_flaky")
    transport.send_raw(b"garbage", "simplest")
    transport.send_raw(json.dumps(_body("simplest", 4, expires="2000-01-01T00:00:00+00:00")).encode(), "cqrs.replica.simplest")
    transport.join()
    assert FlakyModelRef.attempts == 4  # CQRS_MAX_RETRIES = 3 in the test settings
    assert _command("count") == "3\n"
    assert _command("count", "--cqrs-id", "simplest") == "1\n"
    assert _command("summary").splitlines() == [
        "?\tinvalid_json\t1",
        "simplest\texpired\t1",
        "simplest_flaky\tmax_retries\t1",
        "total\t\t3",
    ]
    assert len(_command("dump").splitlines()) == 3
    assert len(_command("dump", "--limit", "2").splitlines()) == 2
    assert _command("count") == "3\n"

    FlakyModelRef.fail_times = 0
    assert _command("retry").startswith("Retried 2 dead letters (not retried: 1 malformed")
    assert len(transport.messages) == 2
    retried = {m.data["cqrs_id"]: m for m in transport.messages}
    assert retried["simplest_flaky"].data["retries"] == 0
    assert retried["simplest_flaky"].routing_key == "cqrs.replica.simplest_flaky"
    assert retried["simplest"].headers["x-cqrs-routing-key"] == "cqrs.replica.simplest"
    assert retried["simplest"].data["expires"] > "2026"
    transport.join(fail_fast=True)
    assert FlakyModelRef.objects.filter(pk=3).exists() and SimplestModelRef.objects.filter(pk=4).exists()
    assert _command("purge") == "Purged 1 dead letter\n"
    assert _command("count") == "0\n"


def test_dead_letter_command_rejects_unknown_ids(transport):
    with pytest.raises(CommandError, match="Wrong CQRS ID"):
        call_command("cqrs_dead_letters", "dump", "--cqrs-id", "nope")
    with pytest.raises(CommandError, match="--limit"):
        call_command("cqrs_dead_letters", "dump", "--limit", "-1")


def test_retry_message_keeps_the_original_routing_key():
    letter = DeadLetter(
        json.dumps(_body("filtered", 2, signal_type="SYNC", retries=9)).encode(),
        {"x-cqrs-routing-key": "cqrs.replica.filtered", "x-cqrs-reason": "expired", "x-cqrs-retries": 9},
    )
    with override_settings(CQRS=dict(_settings(), master={"CQRS_MESSAGE_TTL": 60})):
        routing_key, raw, headers = dead_letters.retry_message(letter, "replica")
    assert routing_key == "cqrs.replica.filtered"
    assert headers == {"x-cqrs-routing-key": "cqrs.replica.filtered"}
    data = json.loads(raw)
    assert data["retries"] == 0 and data["signal_type"] == "SYNC" and data["expires"]


@pytest.mark.django_db(transaction=True)
def test_dead_letters_past_their_ttl_are_dropped_not_retried(transport):
    import time

    from dj_cqrs.core.messages import Outcome as _Outcome
    from dj_cqrs.transport.memory import StoredMessage

    alive = StoredMessage("simplest", json.dumps(_body("simplest", 8)).encode(), {"x-cqrs-dead-until": time.time() + 3600})
    dead = StoredMessage("simplest", json.dumps(_body("simplest", 9)).encode(), {"x-cqrs-dead-until": time.time() - 1})
    transport.dead_letters.extend([(alive, _Outcome(Action.DEAD_LETTER, reason="expired")), (dead, _Outcome(Action.DEAD_LETTER, reason="expired"))])
    assert _command("count") == "2\n"
    assert "1 expired dropped" in _command("retry")
    assert _command("count") == "0\n"
    transport.join(fail_fast=True)
    assert list(SimplestModelRef.objects.values_list("pk", flat=True)) == [8]


@pytest.mark.django_db(transaction=True)
def test_hook_losing_the_database_keeps_the_message(monkeypatch):
    def lost(cls, current_retry, exception=None):
        raise OperationalError("server closed the connection unexpectedly")

    FlakyModelRef.fail_times = 10
    monkeypatch.setattr(FlakyModelRef, "should_retry_cqrs", classmethod(lost))
    outcome = handle(_message(_body("simplest_flaky"), "simplest_flaky"))
    assert (outcome.action, outcome.reason) == (Action.REQUEUE, "database_unavailable")
