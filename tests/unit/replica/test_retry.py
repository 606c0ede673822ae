"""Failure handling: ``should_retry_cqrs`` / ``get_cqrs_retry_delay`` and dead letters."""

from __future__ import annotations

import pytest

from dj_cqrs.core.messages import Action
from dj_cqrs.metas import ReplicaMeta
from dj_cqrs.mixins import RawReplicaMixin
from tests.apps.replica_app.models import AlwaysFailing, FlakyModelRef
from tests.unit.conftest import cqrs_settings_and_transport
from tests.unit.replica.helpers import row, send

pytestmark = pytest.mark.django_db(transaction=True)


def test_flaky_model_applies_after_retries(transport):
    FlakyModelRef.fail_times = 2
    send(transport, "SAVE", row(1, 0, name="a"), "simplest_flaky")

    assert [o.action for o in transport.outcomes] == [Action.RETRY, Action.RETRY, Action.ACK]
    assert [o.payload.retries for o in transport.outcomes] == [0, 1, 2]
    assert transport.outcomes[0].reason == "exception"
    assert "flaky failure 1" in transport.outcomes[0].detail
    assert FlakyModelRef.objects.get(pk=1).name == "a"
    assert transport.dead_letters == []


def test_always_failing_ends_in_dead_letters_after_max_retries(transport):
    send(transport, "SAVE", row(1, 0), "always_failing")

    assert len(AlwaysFailing.attempts) == 4  # first try + CQRS_MAX_RETRIES=3
    [(message, outcome)] = transport.dead_letters
    assert outcome.action is Action.DEAD_LETTER
    assert outcome.reason == "max_retries"
    assert "ValueError: always failing" in outcome.detail
    assert message.data["retries"] == 3
    assert message.routing_key == "always_failing"


def test_a_falsy_result_is_a_failure(transport):
    send(transport, "DELETE", {"id": 1}, "always_failing")
    [(_, outcome)] = transport.dead_letters
    assert outcome.reason == "max_retries"
    assert outcome.detail == "handler_returned_falsy"


def test_zero_max_retries_dead_letters_at_once():
    with cqrs_settings_and_transport(replica={"CQRS_MAX_RETRIES": 0}) as transport:
        send(transport, "SAVE", row(1, 0), "always_failing")
    assert len(AlwaysFailing.attempts) == 1
    letter = transport.dead_letters[0][1]
    assert letter.reason == "max_retries" and letter.failure == "exception" and "ValueError" in letter.detail


def test_none_max_retries_retries_until_it_works():
    FlakyModelRef.fail_times = 40
    with cqrs_settings_and_transport(replica={"CQRS_MAX_RETRIES": None, "CQRS_RETRY_DELAY": 3}) as transport:
        send(transport, "SAVE", row(1, 0, name="late"), "simplest_flaky")
    assert FlakyModelRef.attempts == 41
    assert {o.delay for o in transport.outcomes if o.action is Action.RETRY} == {3.0}
    assert FlakyModelRef.objects.get(pk=1).name == "late"


class CustomRetries(RawReplicaMixin):
    CQRS_ID = "custom_retries"
    calls: list = []

    @classmethod
    def cqrs_save(cls, master_data, previous_data=None, sync=False):
        raise KeyError("boom")

    @classmethod
    def should_retry_cqrs(cls, current_retry, exception=None):
        cls.calls.append(("should_retry", current_retry, type(exception).__name__))
        return current_retry < 1

    @classmethod
    def get_cqrs_retry_delay(cls, current_retry):
        cls.calls.append(("delay", current_retry))
        return 7.5 * (current_retry + 1)


class BrokenHooks(RawReplicaMixin):
    CQRS_ID = "broken_hooks"

    @classmethod
    def cqrs_save(cls, master_data, previous_data=None, sync=False):
        raise KeyError("boom")

    @classmethod
    def should_retry_cqrs(cls, current_retry, exception=None):
        if current_retry:
            raise RuntimeError("broken should_retry_cqrs")
        return True

    @classmethod
    def get_cqrs_retry_delay(cls, current_retry):
        raise RuntimeError("broken get_cqrs_retry_delay")


@pytest.fixture
def custom(isolated_registries):
    CustomRetries.calls = []
    ReplicaMeta.register(CustomRetries)
    ReplicaMeta.register(BrokenHooks)


def test_custom_retry_hooks_are_honoured(transport, custom):
    send(transport, "SAVE", row(1, 0), "custom_retries")

    assert [(o.action, o.delay) for o in transport.outcomes] == [(Action.RETRY, 7.5), (Action.DEAD_LETTER, 0.0)]
    assert CustomRetries.calls == [("should_retry", 0, "KeyError"), ("delay", 0), ("should_retry", 1, "KeyError")]
    assert transport.dead_letters[0][1].reason == "max_retries"


def test_broken_retry_hooks_do_not_break_the_consumer(transport, custom, caplog):
    send(transport, "SAVE", row(1, 0), "broken_hooks")
    assert [(o.action, o.delay) for o in transport.outcomes] == [(Action.RETRY, 0.0), (Action.DEAD_LETTER, 0.0)]
    text = caplog.text
    assert "get_cqrs_retry_delay of broken_hooks raised" in text
    assert "should_retry_cqrs of broken_hooks raised" in text


def test_default_hooks_read_the_settings():
    with cqrs_settings_and_transport(replica={"CQRS_MAX_RETRIES": 2, "CQRS_RETRY_DELAY": 4}):
        assert RawReplicaMixin.should_retry_cqrs(1) is True
        assert RawReplicaMixin.should_retry_cqrs(2) is False
        assert RawReplicaMixin.get_cqrs_retry_delay(0) == 4
    with cqrs_settings_and_transport(replica={"CQRS_MAX_RETRIES": None}):
        assert RawReplicaMixin.should_retry_cqrs(10**6) is True
