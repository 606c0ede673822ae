"""Webhook deliveries carry the change's W3C trace context as HTTP headers: a client span child of
the master's span when tracing is on, the stored headers as they are when it is off; parked
deliveries keep it for their replay; the real sender puts it on the wire."""

from __future__ import annotations

import pytest
from django.test import override_settings

from dj_cqrs import tracing
from dj_cqrs.models import WebhookDelivery, WebhookSubscription
from dj_cqrs.webhooks import sender, subscriptions
from dj_cqrs.webhooks.delivery import SubscriptionDelivery
from tests.apps.master_app.models import SimplestModel
from tests.unit.conftest import cqrs_with
from tests.unit.webhooks.conftest import FAST
from tests.unit.webhooks.test_deliverer import receiver  # noqa: F401  (fixture)

otel_trace = pytest.importorskip("opentelemetry.trace")
pytest.importorskip("opentelemetry.sdk.trace")

from tests.unit.observability.otel import recording_spans  # noqa: E402

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("webhook_settings")]


@pytest.fixture
def spans():
    with recording_spans() as exporter:
        yield exporter


def _pass(subscriber):
    sub = WebhookSubscription.objects.get(name="shop")
    return SubscriptionDelivery("default", sub.id, "me", send=subscriber).run_pass()


def _traceparent(span_context) -> str:
    """version-trace id-span id (the flags differ between SDK versions)."""
    return f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}"


def _ids(traceparent: str) -> str:
    return traceparent.rsplit("-", 1)[0]


def _made_in_a_request(name: str):
    with otel_trace.get_tracer("tests").start_as_current_span("POST /products") as parent:
        SimplestModel.objects.create(name=name)
    return parent.get_span_context()


def test_a_delivery_continues_the_trace_of_the_change_in_a_client_span(spans, subscriber):
    subscriptions.add("shop", "http://127.0.0.1:9/hook", ["simplest"], secret="k")
    parent = _made_in_a_request("a")
    spans.clear()
    assert _pass(subscriber).delivered == 1

    [headers] = subscriber.headers
    [client] = [s for s in spans.get_finished_spans() if s.name == "simplest webhook"]
    assert client.kind is otel_trace.SpanKind.CLIENT
    assert client.context.trace_id == parent.trace_id
    assert client.parent.span_id == parent.span_id
    assert client.attributes["http.request.method"] == "PUT"
    assert client.attributes["http.response.status_code"] == 200
    assert client.attributes["cqrs.webhook"] == "shop"
    # The receiver gets the client span's context: its own span is a child of the delivery.
    assert _ids(headers["traceparent"]) == _traceparent(client.context)


def test_a_change_made_without_a_span_sends_no_trace_headers(spans, subscriber):
    subscriptions.add("shop", "http://127.0.0.1:9/hook", ["simplest"], secret="k")
    SimplestModel.objects.create(name="no span")
    assert _pass(subscriber).delivered == 1
    assert subscriber.headers == [{}]
    assert [s for s in spans.get_finished_spans() if s.name.endswith("webhook")] == []


def test_parked_deliveries_keep_the_trace_for_their_replay(spans, subscriber):
    subscriptions.add("shop", "http://127.0.0.1:9/hook", ["simplest"], secret="k")
    parent = _made_in_a_request("fails first")
    subscriber.fail = lambda body: 500
    _pass(subscriber)
    failed = WebhookDelivery.objects.get()
    assert failed.status == WebhookDelivery.FAILED
    assert failed.trace["traceparent"].split("-")[1] == f"{parent.trace_id:032x}"
    attempts = [s for s in spans.get_finished_spans() if s.name == "simplest webhook"]
    assert len(attempts) == FAST["attempts"]  # one client span per attempt
    assert {s.attributes["http.response.status_code"] for s in attempts} == {500}
    assert all(s.attributes["error.type"] == "500" for s in attempts)

    subscriber.fail = lambda body: None
    subscriber.headers.clear()
    subscriptions.replay("shop")
    assert _pass(subscriber).delivered == 1
    [headers] = subscriber.headers
    assert headers["traceparent"].split("-")[1] == f"{parent.trace_id:032x}"


def test_with_tracing_off_the_stored_context_is_passed_on_as_it_is(spans, subscriber):
    subscriptions.add("shop", "http://127.0.0.1:9/hook", ["simplest"], secret="k")
    parent = _made_in_a_request("a")
    with override_settings(CQRS=cqrs_with(webhooks=FAST, tracing=False)):
        tracing.reset()
        assert not tracing.active()
        spans.clear()
        assert _pass(subscriber).delivered == 1
    [headers] = subscriber.headers
    assert set(headers) == {"traceparent"}
    assert _ids(headers["traceparent"]) == _traceparent(parent)
    assert spans.get_finished_spans() == ()


def test_the_http_sender_puts_the_trace_headers_on_the_wire(receiver):  # noqa: F811
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    outcome = sender.put(
        receiver.url,
        b'{"a": 1}',
        "k",
        "event-1",
        2.0,
        {"traceparent": traceparent, "tracestate": "vendor=1"},
    )
    assert outcome.ok
    [(_, headers)] = receiver.received
    assert headers["traceparent"] == traceparent
    assert headers["tracestate"] == "vendor=1"
    assert headers["Content-Type"] == "application/json"  # ours are not overridden
