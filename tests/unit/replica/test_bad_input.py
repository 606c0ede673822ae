"""Malformed messages are dead-lettered with a reason, never raise, and never block the next one."""

from __future__ import annotations

import datetime
import json

import pytest
from django.test import override_settings
from django.utils import timezone

from dj_cqrs.core.messages import Action, InboundMessage
from dj_cqrs.replica.consumer import handle
from tests.apps.replica_app.models import SimplestModelRef
from tests.unit.conftest import cqrs_settings_and_transport, cqrs_with
from tests.unit.replica.helpers import UPDATED

pytestmark = pytest.mark.django_db(transaction=True)


def body(**changes):
    data = {
        "signal_type": "SAVE",
        "cqrs_id": "simplest",
        "instance_data": {"id": 1, "name": "ok", "cqrs_revision": 0, "cqrs_updated": UPDATED},
        "previous_data": None,
        "instance_pk": 1,
        "correlation_id": None,
        "retries": 0,
        "expires": (timezone.now() + datetime.timedelta(hours=1)).replace(microsecond=0).isoformat(),
        "meta": {},
    }
    for key, value in changes.items():
        if value is KeyError:
            data.pop(key)
        else:
            data[key] = value
    return json.dumps(data).encode()


PAST = "2020-01-01T00:00:00+00:00"

BAD = [
    (b"{not json", "invalid_json"),
    (b"", "invalid_json"),
    (b"\xff\xfe\x00", "invalid_json"),
    (b"[1, 2]", "not_an_object"),
    (b'"text"', "not_an_object"),
    (b"null", "not_an_object"),
    (b"42", "not_an_object"),
    (body(signal_type=KeyError), "missing_keys"),
    (body(cqrs_id=KeyError, instance_data=KeyError), "missing_keys"),
    (body(instance_pk=KeyError), "missing_keys"),
    (body(signal_type="UPSERT"), "bad_signal_type"),
    (body(signal_type=1), "bad_signal_type"),
    (body(signal_type="save"), "bad_signal_type"),
    (body(cqrs_id=5), "bad_cqrs_id"),
    (body(cqrs_id=""), "bad_cqrs_id"),
    (body(instance_data=[1]), "bad_instance_data"),
    (body(instance_data="x"), "bad_instance_data"),
    (body(instance_pk={"id": 1}), "bad_instance_pk"),
    (body(previous_data=[1]), "bad_previous_data"),
    (body(meta="x"), "bad_meta"),
    (body(retries="1"), "bad_retries"),
    (body(retries=-1), "bad_retries"),
    (body(retries=True), "bad_retries"),
    (body(correlation_id=[1]), "bad_correlation_id"),
    (body(expires="next tuesday"), "bad_expires"),
    (body(expires="2024-13-45T00:00:00"), "bad_expires"),
    (body(expires=12345), "bad_expires"),
    (body(cqrs_id="no_such_model"), "unknown_cqrs_id"),
    (body(expires=PAST), "expired"),
]


@pytest.mark.parametrize(("raw", "reason"), BAD, ids=[reason for _, reason in BAD])
def test_handle_dead_letters_with_a_reason_and_never_raises(raw, reason):
    outcome = handle(InboundMessage(raw, routing_key="simplest"))
    assert outcome.action is Action.DEAD_LETTER
    assert outcome.reason == reason
    assert outcome.detail
    assert not SimplestModelRef.objects.exists()


@pytest.mark.parametrize(("raw", "reason"), BAD, ids=[reason for _, reason in BAD])
def test_send_raw_bad_message_then_a_valid_one_still_applies(transport, raw, reason):
    transport.send_raw(raw, routing_key="simplest")
    transport.send_raw(body(), routing_key="simplest")
    transport.join()

    [(message, outcome)] = transport.dead_letters
    assert message.body == raw
    assert outcome.reason == reason
    assert SimplestModelRef.objects.get(pk=1).name == "ok"
    assert transport.outcomes[-1].action is Action.ACK


def test_deeply_nested_json_is_dead_lettered():
    outcome = handle(InboundMessage(b"[" * 100_000 + b"]" * 100_000))
    assert outcome.action is Action.DEAD_LETTER
    assert outcome.reason == "invalid_json"


def test_oversized_body_is_dead_lettered():
    with override_settings(CQRS=cqrs_with(replica={"max_message_bytes": 100})):
        outcome = handle(InboundMessage(body()))
    assert (outcome.action, outcome.reason) == (Action.DEAD_LETTER, "too_large")


def test_expired_message_keeps_its_payload_for_the_dead_letter_queue():
    outcome = handle(InboundMessage(body(expires=PAST)))
    assert outcome.reason == "expired"
    assert outcome.payload is not None and outcome.payload.cqrs_id == "simplest"
    assert "2020-01-01T00:00:00+00:00" in outcome.detail


def test_expiry_is_checked_when_the_replica_runs_without_time_zones():
    with override_settings(USE_TZ=False):
        expired = handle(InboundMessage(body(expires=PAST)))
        fresh = handle(InboundMessage(body(expires="2999-01-01T00:00:00+00:00", instance_data={"id": 2, "name": "tz", "cqrs_revision": 0, "cqrs_updated": "2024-01-02 03:04:05"})))
    assert (expired.action, expired.reason) == (Action.DEAD_LETTER, "expired")
    assert fresh.action is Action.ACK


def test_optional_keys_may_be_missing_or_null(transport):
    raw = body(previous_data=KeyError, correlation_id=KeyError, meta=KeyError, retries=None, expires=KeyError)
    outcome = handle(InboundMessage(raw))
    assert outcome.action is Action.ACK
    assert outcome.payload.retries == 0
    assert outcome.payload.expires is not None  # legacy body: now + this service's TTL


def test_null_expires_never_expires():
    outcome = handle(InboundMessage(body(expires=None)))
    assert outcome.action is Action.ACK
    assert outcome.payload.expires is None


def test_naive_expires_from_a_use_tz_false_master_is_read_as_utc():
    outcome = handle(InboundMessage(body(expires="2999-01-01T00:00:00")))
    assert outcome.action is Action.ACK
    assert outcome.payload.expires.tzinfo is not None


def test_numeric_correlation_id_is_accepted_as_text():
    outcome = handle(InboundMessage(body(correlation_id=17)))
    assert outcome.payload.correlation_id == "17"


def test_a_message_that_can_never_apply_is_dead_lettered_at_once():
    # No revision: retrying cannot help, so it is not retried (django-cqrs retries it 30 times).
    with cqrs_settings_and_transport(replica={"CQRS_MAX_RETRIES": 1}) as transport:
        transport.send_raw(body(instance_data={"id": 1}), routing_key="simplest")
        transport.join()
    assert [o.action for o in transport.outcomes] == [Action.DEAD_LETTER]
    assert transport.dead_letters[0][1].reason == "missing_cqrs_fields"


def test_a_lost_database_connection_keeps_the_message_for_redelivery(isolated_registries):
    from django.db import OperationalError

    from dj_cqrs.metas import ReplicaMeta
    from dj_cqrs.mixins import RawReplicaMixin

    class DatabaseDown(RawReplicaMixin):
        CQRS_ID = "database_down"

        @classmethod
        def cqrs_save(cls, master_data, previous_data=None, sync=False):
            raise OperationalError("server closed the connection unexpectedly")

    ReplicaMeta.register(DatabaseDown)
    outcome = handle(InboundMessage(body(cqrs_id="database_down")))
    assert (outcome.action, outcome.reason) == (Action.REQUEUE, "database_unavailable")
    assert SimplestModelRef.objects.count() == 0  # the connection is usable again
