"""W3C trace context travels with events (headers, never the body) and the consumer continues
the trace (OpenTelemetry SDK with an in-memory exporter, memory transport)."""

from __future__ import annotations

import pytest
from django.db import transaction
from django.test import override_settings

from dj_cqrs import tracing
from dj_cqrs.master.relay import Relay
from dj_cqrs.models import OutboxEvent
from tests.apps.master_app.models import SimplestModel
from tests.apps.replica_app.models import SimplestModelRef
from tests.unit.conftest import cqrs_with

otel_trace = pytest.importorskip("opentelemetry.trace")
pytest.importorskip("opentelemetry.sdk.trace")

from tests.unit.observability.otel import recording_spans  # noqa: E402

pytestmark = pytest.mark.django_db(transaction=True)

#: django-cqrs 3.1.0's body keys: the trace context must not add one.
BODY_KEYS = {"signal_type", "cqrs_id", "instance_data", "previous_data", "instance_pk", "correlation_id", "retries", "expires", "meta"}


@pytest.fixture
def spans():
    with recording_spans() as exporter:
        yield exporter


def request_span():
    return otel_trace.get_tracer("tests").start_as_current_span("POST /orders")


def test_trace_context_travels_in_headers_and_the_replica_continues_the_trace(spans, transport):
    with request_span() as parent:
        SimplestModel.objects.create(name="a")
    trace_id = parent.get_span_context().trace_id
    [message] = transport.published
    version, sent_trace, sent_span, _flags = message.headers["traceparent"].split("-")
    assert (version, sent_trace, sent_span) == (
        "00",
        f"{trace_id:032x}",
        f"{parent.get_span_context().span_id:016x}",
    )
    assert set(message.data) == BODY_KEYS  # the JSON body is unchanged
    row = OutboxEvent.objects.get()
    assert '"trace"' in row.data  # stored with the event: the relay would send the same

    spans.clear()
    transport.join(fail_fast=True)
    assert SimplestModelRef.objects.get().name == "a"
    finished = spans.get_finished_spans()
    batch = next(s for s in finished if s.name == "replica process")
    assert batch.kind is otel_trace.SpanKind.CONSUMER
    assert batch.attributes["messaging.system"] == "memory"
    assert batch.attributes["messaging.destination.name"] == "replica"
    assert batch.attributes["messaging.operation"] == "process"
    assert [link.context.trace_id for link in batch.links] == [trace_id]
    [child] = [s for s in finished if s.name == "simplest process"]
    assert child.context.trace_id == trace_id  # the master's trace continues on the replica
    assert child.parent.span_id == parent.get_span_context().span_id
    assert child.attributes["cqrs.id"] == "simplest"
    assert child.attributes["cqrs.revision"] == 0
    assert child.attributes["cqrs.outcome"] == "ack"
    assert child.attributes["cqrs.status"] == "applied"
    assert child.links[0].context.span_id == batch.context.span_id


def test_the_relay_sends_the_context_recorded_with_the_event(spans, transport):
    transport.fail_with = ConnectionError("broker down")
    with request_span() as parent:
        SimplestModel.objects.create(name="later")
    transport.fail_with = None
    assert transport.published == []
    assert Relay(min_age=0).run_once() == 1  # no span is active here
    [message] = transport.published
    assert (
        message.headers["traceparent"].split("-")[1] == f"{parent.get_span_context().trace_id:032x}"
    )


def test_without_outbox_the_context_active_at_commit_is_sent(spans, transport):
    with override_settings(CQRS=cqrs_with(master={"CQRS_OUTBOX": False})):
        with request_span() as parent, transaction.atomic():
            SimplestModel.objects.create(name="direct")
    [message] = transport.published
    assert (
        message.headers["traceparent"].split("-")[1] == f"{parent.get_span_context().trace_id:032x}"
    )
    assert set(message.data) == BODY_KEYS


def test_no_span_no_headers_and_a_batch_span_without_links(spans, transport):
    SimplestModel.objects.create(name="untraced")
    [message] = transport.published
    assert message.headers == {}
    transport.join(fail_fast=True)
    [batch] = [s for s in spans.get_finished_spans() if s.name == "replica process"]
    assert batch.links == ()
    assert not [s for s in spans.get_finished_spans() if s.name == "simplest process"]


def test_tracing_can_be_turned_off(spans, transport):
    with override_settings(CQRS=cqrs_with(tracing=False)):
        with request_span():
            SimplestModel.objects.create(name="off")
        assert transport.published[0].headers == {}
        transport.join(fail_fast=True)
        assert not [s for s in spans.get_finished_spans() if s.name == "replica process"]
    tracing.reset()


def test_domain_events_carry_the_context_and_their_handling_continues_it(spans):
    from django.contrib.auth.models import Group

    from dj_cqrs import events
    from dj_cqrs.events import registry
    from dj_cqrs.testing import use_memory_transport

    def record(event):
        Group.objects.create(name=f"traced:{event.id}")

    events.handler("invoice.*", name="traced_invoices")(record)
    try:
        with override_settings(CQRS=cqrs_with(master={"outbox_publish": "sync"})), use_memory_transport() as memory:
            with request_span() as parent, transaction.atomic():
                events.emit("invoice.sent", 7, {"n": 1})
            [message] = memory.published
            trace_id = f"{parent.get_span_context().trace_id:032x}"
            assert message.headers["traceparent"].split("-")[1] == trace_id
            assert '"trace"' not in message.body.decode()  # headers only, never the body
            memory.join(fail_fast=True)
        assert Group.objects.filter(name__startswith="traced:").count() == 1
        [child] = [s for s in spans.get_finished_spans() if s.name == "dj_cqrs.event.invoice.sent process"]
        assert f"{child.context.trace_id:032x}" == trace_id
        assert child.attributes["cqrs.revision"] == 1  # the event's place in its key's sequence
    finally:
        registry.unregister("traced_invoices")
