"""Defects found by trying the first hour again on a fresh clone (issue 17 review).

- a kombu URL whose transport kombu does not know, or cannot load because its client library is
  missing (``redis://`` without the ``redis`` package), passed ``manage.py check`` and made every
  publish fail at run time with ``'NoneType' object has no attribute 'Redis'``;
- a ``CQRS['url']`` without a scheme (``127.0.0.1:5672``) and no transport was reported as "there
  is no CQRS['url']", although there is one;
- ``dj_cqrs.W001`` listed the known keys instead of naming the one meant (``max_retries``,
  ``delay_queue_size``) or saying that a top-level key (``queue``) was put in a section.
"""

from __future__ import annotations

import sys
from unittest import mock

import pytest
from django.test import override_settings

from dj_cqrs.checks import check_settings
from dj_cqrs.conf import validate
from tests.unit.conftest import cqrs_with


def kombu_e011(url: str) -> list[str]:
    with override_settings(CQRS=cqrs_with(transport="kombu", url=url)):
        return [f"{m.msg} | {m.hint}" for m in check_settings() if m.id == "dj_cqrs.E011"]


def test_e011_a_kombu_url_of_a_transport_kombu_does_not_know():
    [error] = kombu_e011("http://user:hunter2@127.0.0.1:15672/")
    assert "kombu has no transport for http://" in error
    assert "hunter2" not in error


def test_e011_a_kombu_url_whose_client_library_is_missing():
    # kombu's redis transport module sets ``redis = None`` when the package is missing; resolving
    # the transport then fails, as it did in a fresh virtualenv without dj-cqrs[redis]
    with mock.patch.dict(sys.modules, {"redis": None}):
        for name in [n for n in sys.modules if n.startswith("kombu.transport.redis")]:
            sys.modules.pop(name)
        try:
            [error] = kombu_e011("redis://127.0.0.1:6379/0")
        finally:
            sys.modules.pop("kombu.transport.redis", None)
    assert "needs kombu's 'redis' transport, which cannot be loaded" in error
    assert "pip install 'dj-cqrs[redis]'" in error


@pytest.mark.parametrize(
    "url",
    [
        "filesystem://",
        "memory://",
        "amqp://guest:guest@127.0.0.1:5672//",
        "127.0.0.1:5672",  # kombu reads a bare host as amqp://
    ],
)
def test_e011_passes_kombu_urls_it_can_load(url):
    assert kombu_e011(url) == []


def test_e002_names_a_url_without_a_scheme():
    with mock.patch("dj_cqrs.conf.test_runner_active", return_value=False):
        [problem] = validate(
            {"url": "guest:secret@127.0.0.1:5672"}, has_masters=True, has_replicas=False
        )
        [none] = validate({}, has_masters=True, has_replicas=False)
    assert problem.id == "dj_cqrs.E002"
    assert "CQRS['url'] '***@127.0.0.1:5672' has no scheme (amqp://" in problem.msg
    assert "secret" not in problem.msg
    assert "there is no CQRS['url']" in none.msg


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("max_retries", "Did you mean 'CQRS_MAX_RETRIES'?"),
        ("cqrs_retry_delay", "Did you mean 'CQRS_RETRY_DELAY'?"),
        ("delay_queue_size", "Did you mean 'delay_queue_max_size'?"),
        ("queue", "Did you mean CQRS['queue']? It is a top-level key."),
    ],
)
def test_w001_names_the_key_meant(key, hint):
    [problem] = validate(
        {"transport": "memory", "replica": {key: 1}}, has_masters=False, has_replicas=False
    )
    assert (problem.id, problem.hint) == ("dj_cqrs.W001", hint)


def test_w001_lists_the_known_keys_when_nothing_is_close():
    [problem] = validate(
        {"transport": "memory", "replica": {"zzz_unrelated": 1}},
        has_masters=False,
        has_replicas=False,
    )
    assert problem.hint.startswith("Known keys: ") and "CQRS_MAX_RETRIES" in problem.hint


def test_the_outbox_admin_counts_events_in_the_singular_and_the_plural():
    from dj_cqrs.ops.outbox_admin import _events

    assert [_events(0), _events(1), _events(2)] == [
        "0 outbox events",
        "1 outbox event",
        "2 outbox events",
    ]
    assert _events(1, outbox=False) + " will be retried." == "1 event will be retried."


def test_a_consumer_that_cannot_connect_says_where_it_tried():
    """``cqrs_consume`` with the README's ``amqp://guest:guest@rabbitmq:5672/%2F`` on a machine
    without that host logged only "cannot connect to RabbitMQ: gaierror(-2, ...)"."""
    from dj_cqrs.exceptions import ConnectionFailed
    from dj_cqrs.transport.rabbit_connection import open_blocking_connection

    url = "amqp://guest:hunter2@127.0.0.1:9/%2F"  # the discard port: refused at once
    with override_settings(CQRS=cqrs_with(transport="rabbitmq", url=url)):
        with pytest.raises(ConnectionFailed) as failed:
            open_blocking_connection("consumer")
    text = str(failed.value)
    assert text.startswith("cannot connect to RabbitMQ at amqp://guest:***@127.0.0.1:9/%2F: ")
    assert "hunter2" not in text


def test_a_publish_that_cannot_reach_the_broker_says_where_and_how_often():
    """It said "1 message(s) not confirmed by RabbitMQ after 1 attempts: gaierror(...)"."""
    from dj_cqrs.exceptions import PublishFailed
    from dj_cqrs.transport.rabbit_mq import RabbitMQTransport

    url = "amqp://guest:hunter2@127.0.0.1:9/%2F"  # the discard port: refused at once
    message = ("cqrs", "simplest", b"{}", None, None)
    with override_settings(CQRS=cqrs_with(transport="rabbitmq", url=url)):
        transport = RabbitMQTransport()
        try:
            with pytest.raises(PublishFailed) as failed:
                transport.publish_confirmed([message], retries=0)
        finally:
            transport.close()
    text = str(failed.value)
    assert "not confirmed by RabbitMQ at amqp://guest:***@127.0.0.1:9/%2F after 1 attempt: " in text
    assert "hunter2" not in text


def test_cqrs_consume_says_at_start_that_a_replica_database_cannot_be_reached(caplog):
    """A misspelt DATABASES name: the consumer started and connected to the broker without a word
    until the first message arrived (then: "Replica database unavailable ...")."""
    from django.db import OperationalError

    from dj_cqrs.replica.worker import startup_problems

    psycopg2 = pytest.importorskip("psycopg2")
    text = 'connection to server at "127.0.0.1", port 5432 failed: FATAL:  database "shop_typo" does not exist'
    failure = OperationalError(text)  # as Django raises it: libpq's error as the cause
    failure.__cause__ = psycopg2.OperationalError(text)
    with (
        mock.patch("django.db.backends.base.base.BaseDatabaseWrapper.cursor", side_effect=failure),
        caplog.at_level("WARNING", logger="django-cqrs.worker"),
    ):
        problems = startup_problems(None)
    assert problems == []  # not a reason to stop: the workers wait for the database
    [record] = [r for r in caplog.records if "cannot be reached" in r.getMessage()]
    assert record.levelname == "WARNING"
    assert "database 'default' cannot be reached" in record.getMessage()
    assert 'database "shop_typo" does not exist' in record.getMessage()
