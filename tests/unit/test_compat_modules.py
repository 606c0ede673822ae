"""django-cqrs import paths kept for code written against it: delay, logger, transport.mixins."""

from __future__ import annotations

import datetime
import logging
import queue as stdlib_queue

import pytest
from django.utils import timezone

from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.delay import DelayMessage, DelayQueue
from dj_cqrs.logger import install_last_query_capturer, log_timed_out_queries
from dj_cqrs.transport.mixins import LoggingMixin


def test_delay_queue_orders_by_eta_and_refuses_a_message_when_full():
    now = timezone.now()
    queue = DelayQueue(max_size=2)
    late = DelayMessage(1, "late", now + datetime.timedelta(hours=1))
    due = DelayMessage(2, "due", now - datetime.timedelta(seconds=1))
    assert queue.put(late) is None and queue.put(due) is None
    assert queue.full() and queue.qsize() == 2
    with pytest.raises(stdlib_queue.Full):
        queue.put(DelayMessage(3, "refused", now - datetime.timedelta(hours=1)))
    assert queue.qsize() == 2
    assert [m.payload for m in queue.get_ready()] == ["due"]
    assert queue.put(DelayMessage(3, "later", now + datetime.timedelta(hours=2))) is None
    assert [queue.get().payload for _ in range(2)] == ["late", "later"]
    for error in (TypeError, AssertionError):  # AssertionError: what django-cqrs raised
        with pytest.raises(error):
            queue.put(("not", "a", "message"))  # type: ignore[arg-type]
    for error in (ValueError, AssertionError):
        with pytest.raises(error, match="max_size should be positive integer"):
            DelayQueue(max_size=0)


def test_delay_queue_get_ready_is_lazy_as_django_cqrs():
    """A generator: each due message leaves the queue when it is yielded, not before."""
    now = timezone.now()
    queue = DelayQueue()
    for tag, seconds in ((1, -3), (2, -2), (3, 3600)):
        queue.put(DelayMessage(tag, None, now + datetime.timedelta(seconds=seconds)))
    ready = queue.get_ready()
    assert queue.qsize() == 3
    assert next(ready).delivery_tag == 1 and queue.qsize() == 2
    assert [m.delivery_tag for m in ready] == [2] and queue.qsize() == 1
    assert list(queue.get_ready()) == []


def test_logging_mixin_lines_carry_the_payload_context(caplog):
    payload = TransportPayload("SAVE", "basic", {"id": 1, "cqrs_revision": 3}, 1, correlation_id="c-1")
    with caplog.at_level(logging.INFO, logger="django-cqrs"):
        LoggingMixin.log_consumed_accepted(payload)
        LoggingMixin.log_dead_letter(payload)
    assert [r.getMessage() for r in caplog.records] == [
        "CQRS is applied: pk = 1 (basic), correlation_id = c-1.",
        "CQRS is added to dead letter queue: pk = 1 (basic), correlation_id = c-1.",
    ]
    assert caplog.records[0].cqrs_revision == 3


@pytest.mark.django_db
def test_logger_functions_only_log_statement_timeouts(caplog):
    from tests.apps.replica_app.models import SimplestModelRef

    install_last_query_capturer(SimplestModelRef)
    with caplog.at_level(logging.ERROR):
        log_timed_out_queries(RuntimeError("not a timeout"), SimplestModelRef)
    assert caplog.records == []


def test_app_verbose_name_is_django_cqrs_default():
    """django-cqrs's AppConfig sets no verbose_name: the admin shows Django's default."""
    from django.apps import apps

    assert apps.get_app_config("dj_cqrs").verbose_name == "Dj_Cqrs"
