"""``dj_cqrs.conf.cqrs_settings``: defaults, lazy reads, no mutation, reload on change."""

from __future__ import annotations

import copy

import pytest
from django.conf import settings
from django.test import override_settings

from dj_cqrs.conf import cqrs_settings, resolve_callable, validate
from dj_cqrs.exceptions import ConfigurationError
from tests.unit.conftest import cqrs_with

ROOT_DEFAULTS = {
    "url": None,
    "host": None,
    "port": None,
    "user": None,
    "password": None,
    "exchange": "cqrs",
    "queue": None,
    "consumer_prefetch_count": 10,
}
MASTER_DEFAULTS = {
    "CQRS_AUTO_UPDATE_FIELDS": False,
    "CQRS_MESSAGE_TTL": 86400,
    "correlation_function": None,
    "meta_function": None,
    "publish_retries": 3,
    "publish_retry_delay": 0.2,
    "confirm_timeout": 10,
}
REPLICA_DEFAULTS = {
    "CQRS_MAX_RETRIES": 30,
    "CQRS_RETRY_DELAY": 2,
    "delay_queue_max_size": 1000,
    "dead_letter_queue": None,
    "dead_message_ttl": 864000,
    "CQRS_QUERY_TIMEOUT": 0,
    "CQRS_LOG_TIMED_OUT_QUERIES": False,
    "CQRS_QUERY_LOGGER": "",
    "CQRS_BATCH_SIZE": 500,
    "CQRS_BATCH_MAX_WAIT": 0.005,
    "CQRS_BATCH_APPLY": True,
    "max_message_bytes": 16 * 1024 * 1024,
}


def read_everything():
    values = {key: getattr(cqrs_settings, key) for key in ROOT_DEFAULTS}
    values["transport"] = cqrs_settings.transport
    values["master"] = {key: getattr(cqrs_settings.master, key) for key in MASTER_DEFAULTS}
    values["replica"] = {key: getattr(cqrs_settings.replica, key) for key in REPLICA_DEFAULTS}
    values["dead_letter_queue"] = cqrs_settings.dead_letter_queue
    return values


def test_defaults_of_every_key():
    with override_settings(CQRS={"transport": "memory"}):
        values = read_everything()
    assert values["transport"] == "memory"
    assert {k: values[k] for k in ROOT_DEFAULTS} == ROOT_DEFAULTS
    assert values["master"] == MASTER_DEFAULTS
    assert values["replica"] == REPLICA_DEFAULTS


def test_defaults_without_any_cqrs_setting():
    with override_settings():
        del settings.CQRS
        assert cqrs_settings.configured is False
        assert cqrs_settings.raw == {}
        assert cqrs_settings.transport is None
        assert cqrs_settings.master.CQRS_MESSAGE_TTL == 86400
        assert cqrs_settings.replica.CQRS_MAX_RETRIES == 30
    assert cqrs_settings.configured is True


def test_configured_values_are_returned():
    config = cqrs_with(
        url="amqp://u:p@h:5673/v",
        exchange="ex",
        queue="orders",
        consumer_prefetch_count=5,
        master={"CQRS_AUTO_UPDATE_FIELDS": True, "CQRS_MESSAGE_TTL": None},
        replica={"CQRS_MAX_RETRIES": None, "dead_letter_queue": "dlq", "CQRS_QUERY_LOGGER": "sql"},
    )
    with override_settings(CQRS=config):
        assert (cqrs_settings.url, cqrs_settings.exchange, cqrs_settings.queue) == ("amqp://u:p@h:5673/v", "ex", "orders")
        assert cqrs_settings.consumer_prefetch_count == 5
        assert cqrs_settings.master.CQRS_AUTO_UPDATE_FIELDS is True
        assert cqrs_settings.master.CQRS_MESSAGE_TTL is None
        assert cqrs_settings.replica.CQRS_MAX_RETRIES is None
        assert cqrs_settings.replica.CQRS_QUERY_LOGGER == "sql"
        assert cqrs_settings.dead_letter_queue == "dlq"


def test_dead_letter_queue_defaults_to_the_queue_name():
    with override_settings(CQRS=cqrs_with(queue="orders")):
        assert cqrs_settings.dead_letter_queue == "dead_letter_orders"


def test_reading_never_mutates_settings_cqrs():
    original = copy.deepcopy(settings.CQRS)
    read_everything()
    validate(settings.CQRS, has_masters=True, has_replicas=True)
    assert settings.CQRS == original
    with override_settings(CQRS={"transport": "memory"}):
        read_everything()
        assert settings.CQRS == {"transport": "memory"}


def test_sections_reload_on_override_settings():
    assert cqrs_settings.master.CQRS_MESSAGE_TTL == 86400
    with override_settings(CQRS=cqrs_with(master={"CQRS_MESSAGE_TTL": 5})):
        assert cqrs_settings.master.CQRS_MESSAGE_TTL == 5
        with override_settings(CQRS=cqrs_with(master={"CQRS_MESSAGE_TTL": 6})):
            assert cqrs_settings.master.CQRS_MESSAGE_TTL == 6
        assert cqrs_settings.master.CQRS_MESSAGE_TTL == 5
    assert cqrs_settings.master.CQRS_MESSAGE_TTL == 86400


def test_settings_fixture_changes_are_seen(settings):
    settings.CQRS = cqrs_with(replica={"CQRS_RETRY_DELAY": 9})
    assert cqrs_settings.replica.CQRS_RETRY_DELAY == 9


def test_unknown_keys_raise_attribute_error():
    with pytest.raises(AttributeError, match="no_such_key"):
        cqrs_settings.no_such_key  # noqa: B018
    with pytest.raises(AttributeError, match="no_such_key"):
        cqrs_settings.master.no_such_key  # noqa: B018
    with pytest.raises(AttributeError):
        cqrs_settings._private  # noqa: B018
    with pytest.raises(AttributeError):
        cqrs_settings.master._private  # noqa: B018
    assert cqrs_settings.master.get("no_such_key", "fallback") == "fallback"


def test_section_raw_is_a_copy():
    raw = cqrs_settings.master.raw()
    raw["CQRS_MESSAGE_TTL"] = 1
    assert cqrs_settings.master.CQRS_MESSAGE_TTL == 86400
    with override_settings(CQRS=cqrs_with(master="not a dict")):
        assert cqrs_settings.master.raw() == {}
        assert cqrs_settings.master.CQRS_MESSAGE_TTL == 86400


@pytest.mark.parametrize(
    ("config", "getter", "check_id"),
    [
        (cqrs_with(port="5672"), lambda: cqrs_settings.port, "dj_cqrs.E005"),
        (cqrs_with(exchange=""), lambda: cqrs_settings.exchange, "dj_cqrs.E005"),
        (cqrs_with(master={"CQRS_MESSAGE_TTL": 0}), lambda: cqrs_settings.master.CQRS_MESSAGE_TTL, "dj_cqrs.E007"),
        (cqrs_with(replica={"CQRS_MAX_RETRIES": -1}), lambda: cqrs_settings.replica.CQRS_MAX_RETRIES, "dj_cqrs.E008"),
    ],
)
def test_invalid_values_raise_with_the_id_of_their_system_check(config, getter, check_id):
    with override_settings(CQRS=config):
        with pytest.raises(ConfigurationError, match=check_id):
            getter()
        assert check_id in {p.id for p in validate(config, has_masters=True, has_replicas=True)}


def test_resolve_callable():
    from tests.apps.master_app.hooks import meta_function

    assert resolve_callable(None) is None
    assert resolve_callable(len) is len
    assert resolve_callable("tests.apps.master_app.hooks.meta_function") is meta_function
    with pytest.raises(ImportError):
        resolve_callable("tests.apps.master_app.hooks.missing")


def test_values_assigned_into_settings_cqrs_are_seen_by_the_next_read():
    original = copy.deepcopy(settings.CQRS)
    try:
        assert cqrs_settings.replica.CQRS_MAX_RETRIES == original.get("replica", {}).get("CQRS_MAX_RETRIES", 30)
        settings.CQRS.setdefault("replica", {})["CQRS_MAX_RETRIES"] = 7
        assert cqrs_settings.replica.CQRS_MAX_RETRIES == 7
        settings.CQRS["replica"] = {"CQRS_RETRY_DELAY": 11}
        assert (cqrs_settings.replica.CQRS_MAX_RETRIES, cqrs_settings.replica.CQRS_RETRY_DELAY) == (30, 11)
        settings.CQRS.setdefault("master", {})["CQRS_MESSAGE_TTL"] = 60
        assert cqrs_settings.master.CQRS_MESSAGE_TTL == 60
        settings.CQRS["exchange"] = "other"
        assert cqrs_settings.exchange == "other"
        del settings.CQRS["exchange"]
        assert cqrs_settings.exchange == "cqrs"
        settings.CQRS["replica"]["CQRS_RETRY_DELAY"] = -1
        with pytest.raises(ConfigurationError, match="dj_cqrs.E008"):
            cqrs_settings.replica.CQRS_RETRY_DELAY  # noqa: B018
    finally:
        settings.CQRS.clear()
        settings.CQRS.update(original)
    assert cqrs_settings.replica.CQRS_RETRY_DELAY == original.get("replica", {}).get("CQRS_RETRY_DELAY", 2)


def test_settings_cqrs_assigned_without_a_signal_is_seen():
    original = settings.CQRS
    try:
        settings.CQRS = cqrs_with(replica={"CQRS_MAX_RETRIES": 3})  # plain assignment: no setting_changed
        assert cqrs_settings.replica.CQRS_MAX_RETRIES == 3
    finally:
        settings.CQRS = original
    assert cqrs_settings.replica.CQRS_MAX_RETRIES == original.get("replica", {}).get("CQRS_MAX_RETRIES", 30)


def test_section_get_reads_the_current_value():
    with override_settings(CQRS=cqrs_with(master={"CQRS_MESSAGE_TTL": 5})):
        assert cqrs_settings.master.get("CQRS_MESSAGE_TTL") == 5
        settings.CQRS["master"]["CQRS_MESSAGE_TTL"] = 6
        assert cqrs_settings.master.get("CQRS_MESSAGE_TTL") == 6
        assert cqrs_settings.master.raw()["CQRS_MESSAGE_TTL"] == 6
