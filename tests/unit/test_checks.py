"""Every system check id of ``dj_cqrs.checks`` / ``dj_cqrs.conf``, triggered by a bad configuration."""

from __future__ import annotations

from unittest import mock

import pytest
from django.conf import settings
from django.core import checks
from django.db import models
from django.test import override_settings
from django.test.utils import isolate_apps

from dj_cqrs.checks import check_registries, check_settings
from dj_cqrs.conf import validate
from dj_cqrs.metas import ReplicaMeta
from dj_cqrs.mixins import MasterMixin, RawReplicaMixin, ReplicaMixin
from tests.unit.conftest import cqrs_with


def ids(messages):
    return [m.id for m in messages]


def run(config=None):
    if config is None:
        return check_settings()
    with override_settings(CQRS=config):
        return check_settings()


def test_the_test_settings_pass_every_check():
    assert checks.run_checks(tags=["dj_cqrs"]) == []


def test_checks_are_registered_under_the_dj_cqrs_tag():
    with override_settings(CQRS=cqrs_with(transport="no.such.Transport")):
        assert "dj_cqrs.E003" in ids(checks.run_checks(tags=["dj_cqrs"]))


def test_e001_cqrs_missing_while_models_are_registered():
    with override_settings():
        del settings.CQRS
        [error] = check_settings()
    assert error.id == "dj_cqrs.E001"
    assert isinstance(error, checks.Error)
    assert "CQRS" in error.hint


def test_e001_cqrs_not_a_dict():
    assert ids(run(["transport"])) == ["dj_cqrs.E001"]


@pytest.fixture
def outside_tests():
    """The checks as ``manage.py check`` runs them, outside Django's test environment (under it,
    a missing CQRS['transport'] means the memory transport)."""
    with mock.patch("dj_cqrs.conf.test_runner_active", return_value=False):
        yield


def test_nothing_is_required_without_cqrs_models(outside_tests):
    assert validate(None, has_masters=False, has_replicas=False) == []
    assert validate({}, has_masters=False, has_replicas=False)[0].id == "dj_cqrs.E002"


def test_e002_transport_missing(outside_tests):
    messages = run(cqrs_with(transport=None))
    assert ids(messages) == ["dj_cqrs.E002"]
    assert "rabbitmq" in messages[0].hint
    assert "CQRS['url']" in messages[0].hint


def test_no_e002_under_the_test_runner():
    """pytest-django set the test environment up: no transport named means the memory transport."""
    assert ids(run(cqrs_with(transport=None))) == []


def test_e003_transport_path_cannot_be_imported_is_an_error_not_none():
    [error] = run(cqrs_with(transport="dj_cqrs.transport.NoSuchTransport"))
    assert error.id == "dj_cqrs.E003"
    assert isinstance(error, checks.Error)
    assert "NoSuchTransport" in error.msg
    assert error.hint


def test_e004_transport_is_not_a_base_transport():
    [error] = run(cqrs_with(transport="dj_cqrs.conf.Problem"))
    assert error.id == "dj_cqrs.E004"


@pytest.mark.parametrize(
    "changes",
    [
        {"port": "5672"},
        {"url": 5},
        {"host": 1},
        {"user": 1},
        {"password": 1},
        {"exchange": ""},
        {"queue": ""},
        {"consumer_prefetch_count": 0},
        {"consumer_prefetch_count": True},
    ],
)
def test_e005_bad_root_values(changes):
    messages = run(cqrs_with(**changes))
    assert "dj_cqrs.E005" in ids(messages)
    key = next(iter(changes))
    assert any(key in m.msg for m in messages)


def test_e006_queue_required_with_replicas():
    messages = run(cqrs_with(queue=None))
    assert ids(messages) == ["dj_cqrs.E006"]
    assert validate({"transport": "memory"}, has_masters=True, has_replicas=False) == []


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("CQRS_AUTO_UPDATE_FIELDS", "yes"),
        ("CQRS_MESSAGE_TTL", 0),
        ("CQRS_MESSAGE_TTL", -5),
        ("CQRS_MESSAGE_TTL", "86400"),
        ("CQRS_MESSAGE_TTL", 1.5),
        ("correlation_function", 5),
        ("meta_function", "nodots"),
        ("publish_retries", -1),
        ("publish_retry_delay", -0.1),
        ("confirm_timeout", 0),
    ],
)
def test_e007_bad_master_values(key, value):
    messages = run(cqrs_with(master={key: value}))
    assert ids(messages)[0] == "dj_cqrs.E007"  # a path without dots also fails to import (E009)
    assert key in messages[0].msg
    assert "default" in messages[0].hint


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("CQRS_MAX_RETRIES", -1),
        ("CQRS_MAX_RETRIES", "3"),
        ("CQRS_RETRY_DELAY", -2),
        ("CQRS_RETRY_DELAY", None),
        ("delay_queue_max_size", 0),
        ("dead_letter_queue", ""),
        ("dead_message_ttl", 0),
        ("CQRS_QUERY_TIMEOUT", -1),
        ("CQRS_LOG_TIMED_OUT_QUERIES", 1),
        ("CQRS_QUERY_LOGGER", None),
        ("CQRS_BATCH_SIZE", 0),
        ("CQRS_BATCH_SIZE", 20000),
        ("CQRS_BATCH_MAX_WAIT", -0.1),
        ("CQRS_BATCH_MAX_WAIT", "5ms"),
        ("CQRS_BATCH_APPLY", "yes"),
        ("max_message_bytes", 0),
    ],
)
def test_e008_bad_replica_values(key, value):
    messages = run(cqrs_with(replica={key: value}))
    assert ids(messages) == ["dj_cqrs.E008"]
    assert key in messages[0].msg


def test_e007_e008_sections_must_be_dicts():
    assert ids(run(cqrs_with(master=["x"], replica="y"))) == ["dj_cqrs.E007", "dj_cqrs.E008"]


@pytest.mark.parametrize("key", ["meta_function", "correlation_function"])
def test_e009_function_paths(key):
    missing = run(cqrs_with(master={key: "tests.apps.master_app.hooks.missing"}))
    not_callable = run(cqrs_with(master={key: "tests.apps.master_app.hooks.not_callable"}))
    good = run(cqrs_with(master={key: f"tests.apps.master_app.hooks.{key}"}))
    assert ids(missing) == ["dj_cqrs.E009"]
    assert ids(not_callable) == ["dj_cqrs.E009"]
    assert "not callable" in not_callable[0].msg
    assert good == []


@pytest.mark.parametrize("url", ["amqp://guest:guest@127.0.0.1:5672/%2F?heartbeat=notanumber", "amqp://host:notaport/"])
def test_e011_bad_rabbitmq_url(url):
    [error] = run(cqrs_with(transport="dj_cqrs.transport.RabbitMQTransport", url=url))
    assert error.id == "dj_cqrs.E011"


def test_good_rabbitmq_urls_pass():
    for url in ("amqp://guest:guest@127.0.0.1:5672/%2F", "amqps://u:p@broker.example:5671/vhost"):
        assert run(cqrs_with(transport="rabbitmq", url=url)) == []


def test_w001_misnamed_and_unknown_keys_are_warnings_with_hints():
    messages = run(cqrs_with(replica={"CQRS_DELAY_QUEUE_MAX_SIZE": 10}, master={"CQRS_TTL": 5}))
    assert ids(messages) == ["dj_cqrs.W001", "dj_cqrs.W001"]
    assert all(isinstance(m, checks.Warning) for m in messages)
    hints = {m.msg: m.hint for m in messages}
    assert hints["Unknown setting CQRS['replica']['CQRS_DELAY_QUEUE_MAX_SIZE'] is ignored."] == (
        "Did you mean 'delay_queue_max_size'?"
    )
    assert "CQRS_MESSAGE_TTL" in hints["Unknown setting CQRS['master']['CQRS_TTL'] is ignored."]


# -- model configuration ---------------------------------------------------------------------


def model_errors(model):
    return [m for m in check_registries() if m.obj is model]


@pytest.fixture
def throwaway(isolated_registries):
    with isolate_apps("tests.apps.master_app", "tests.apps.replica_app"):
        yield


def test_the_test_models_pass():
    assert check_registries() == []


def test_e020_duplicate_master_cqrs_id(throwaway):
    class Clash(MasterMixin):
        CQRS_ID = "simplest"

        class Meta:
            app_label = "master_app"

    [error] = [m for m in check_registries() if m.id == "dj_cqrs.E020"]
    assert error.obj is Clash
    assert "'simplest'" in error.msg and "SimplestModel" in error.msg and "Clash" in error.msg


def test_e021_duplicate_replica_cqrs_id(throwaway):
    class Handler(RawReplicaMixin):
        CQRS_ID = "simplest"

    ReplicaMeta.register(Handler)
    assert [m.id for m in check_registries() if m.obj is Handler] == ["dj_cqrs.E021"]


def test_e022_missing_cqrs_id(throwaway):
    class NoId(MasterMixin):
        class Meta:
            app_label = "master_app"

    assert ids(model_errors(NoId)) == ["dj_cqrs.E022"]


@pytest.mark.parametrize(
    ("fields", "text"),
    [
        ("id", "must be '__all__' or a list"),
        (["id", 5], "must be '__all__' or a list"),
        (["id", "nope"], "unknown fields: nope"),
        (["id", "name", "name"], "duplicates"),
        (["name"], "primary key 'id'"),
    ],
)
def test_e030_bad_cqrs_fields(throwaway, fields, text):
    class BadFields(MasterMixin):
        CQRS_ID = "bad_fields"
        CQRS_FIELDS = fields
        name = models.CharField(max_length=10)

        class Meta:
            app_label = "master_app"

    errors = model_errors(BadFields)
    assert ids(errors) == ["dj_cqrs.E030"]
    assert text in errors[0].msg


def test_e031_fields_and_serializer_together(throwaway):
    class Both(MasterMixin):
        CQRS_ID = "both"
        CQRS_FIELDS = ["id"]
        CQRS_SERIALIZER = "tests.apps.master_app.serializers.AuthorSerializer"

        class Meta:
            app_label = "master_app"

    assert ids(model_errors(Both)) == ["dj_cqrs.E031"]


def test_e033_serializer_cannot_be_imported(throwaway):
    class BadSerializer(MasterMixin):
        CQRS_ID = "bad_serializer"
        CQRS_SERIALIZER = "tests.apps.master_app.serializers.Missing"

        class Meta:
            app_label = "master_app"

    [error] = model_errors(BadSerializer)
    assert error.id == "dj_cqrs.E033"
    assert "Missing" in error.msg


@pytest.mark.parametrize(("tracked", "text"), [("name", "must be None, '__all__' or a list"), (["nope"], "unknown fields: nope")])
def test_e034_bad_tracked_fields(throwaway, tracked, text):
    class BadTracked(MasterMixin):
        CQRS_ID = "bad_tracked"
        CQRS_TRACKED_FIELDS = tracked
        name = models.CharField(max_length=10)

        class Meta:
            app_label = "master_app"

    [error] = model_errors(BadTracked)
    assert error.id == "dj_cqrs.E034"
    assert text in error.msg


def test_e040_mapping_not_a_dict(throwaway):
    class BadMapping(ReplicaMixin):
        CQRS_ID = "bad_mapping"
        CQRS_MAPPING = [("id", "id")]

        class Meta:
            app_label = "replica_app"

    assert ids(model_errors(BadMapping)) == ["dj_cqrs.E040"]


def test_e041_e042_mapping_targets(throwaway):
    class UnknownTarget(ReplicaMixin):
        CQRS_ID = "unknown_target"
        CQRS_MAPPING = {"id": "id", "name": "title"}

        class Meta:
            app_label = "replica_app"

    class NoPk(ReplicaMixin):
        CQRS_ID = "no_pk"
        CQRS_MAPPING = {"name": "name"}
        name = models.CharField(max_length=10)

        class Meta:
            app_label = "replica_app"

    assert ids(model_errors(UnknownTarget)) == ["dj_cqrs.E041"]
    assert ids(model_errors(NoPk)) == ["dj_cqrs.E042"]


def test_good_mapping_with_attname_targets_passes(throwaway):
    class Good(ReplicaMixin):
        CQRS_ID = "good_mapping"
        CQRS_MAPPING = {"id": "id", "owner": "owner_id"}
        owner = models.ForeignKey("replica_app.PublisherRef", null=True, on_delete=models.DO_NOTHING)

        class Meta:
            app_label = "replica_app"

    assert model_errors(Good) == []


@pytest.mark.django_db
def test_e060_a_save_without_the_outbox_table_says_to_migrate(transport):
    from django.db import connection

    from dj_cqrs.exceptions import ConfigurationError
    from tests.apps.master_app.models import SimplestModel

    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE dj_cqrs_outbox")  # rolled back with the test's transaction
    with pytest.raises(ConfigurationError, match=r"dj_cqrs.E060: .*migrate dj_cqrs"):
        SimplestModel.objects.create(name="x")
