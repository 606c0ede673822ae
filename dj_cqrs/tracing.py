"""OpenTelemetry trace context for events (opentelemetry-api, the optional ``[tracing]`` extra).

On the master, :func:`current_context` gives the W3C ``traceparent``/``tracestate`` of the span
active when a change is recorded (stored in the outbox row, so the relay keeps them) or committed
(events published without the outbox); transports send them as message headers, never in the
JSON body. On the replica, :func:`consume_spans` opens a span per consumed batch, linked to the
trace of every message that carried one, and after the batch one span per such message, a child
of the master's span (so the master's trace continues on the replica) with the ``cqrs.id``,
``cqrs.revision`` and ``messaging.*`` attributes.

Whether opentelemetry-api can be imported is checked once per process; without it (or with
``CQRS["tracing"] = False``) every function returns at once and nothing is imported.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from django.core.signals import setting_changed

from dj_cqrs.conf import cqrs_settings
from dj_cqrs.core.messages import InboundMessage, Outcome

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
#: The instrumentation scope of dj_cqrs's spans.
TRACER_NAME = "dj_cqrs"


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        #: None: not resolved yet; False: off (not installed or disabled); else the api handles.
        self.api: Any = None
        #: Whether opentelemetry-api was found (checked once).
        self.installed: bool | None = None


_state = _State()


class _Api:
    """The opentelemetry-api names used here, imported once."""

    def __init__(self) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.context = context
        self.trace = trace
        self.propagator = TraceContextTextMapPropagator()


def _api() -> Any:
    api = _state.api
    if api is None:
        with _state.lock:
            if _state.installed is None:
                try:
                    import opentelemetry.trace  # noqa: F401
                except ImportError:
                    _state.installed = False
                else:
                    _state.installed = True
            _state.api = _Api() if _state.installed and cqrs_settings.tracing else False
            api = _state.api
    return api


def active() -> bool:
    """Whether events carry trace context in this process."""
    return bool(_api())


def reset() -> None:
    """Read ``CQRS["tracing"]`` again at the next call (settings changed; tests)."""
    with _state.lock:
        _state.api = None


def _reset_on_change(*, setting: str, **kwargs: Any) -> None:
    if setting == "CQRS":
        reset()


setting_changed.connect(_reset_on_change, dispatch_uid="dj_cqrs.tracing.reset")


def current_context() -> dict[str, str] | None:
    """``{"traceparent": ..., "tracestate": ...}`` of the active span, or None (no valid span,
    tracing off or not installed)."""
    api = _api()
    if not api:
        return None
    if not api.context.get_current():  # an empty context holds no span (the cheap common case)
        return None
    if not api.trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    api.propagator.inject(carrier)
    return carrier or None


def headers_of(payload: Any) -> dict[str, str] | None:
    """The trace headers a payload carries (``payload.trace``), if any."""
    trace = getattr(payload, "trace", None)
    return dict(trace) if trace else None


def _remote_context(api: Any, headers: dict[str, Any] | None) -> Any:
    """The remote span context of a message's headers, or None."""
    if not headers or TRACEPARENT not in headers:
        return None
    carrier = {TRACEPARENT: _text(headers.get(TRACEPARENT))}
    if headers.get(TRACESTATE):
        carrier[TRACESTATE] = _text(headers.get(TRACESTATE))
    ctx = api.propagator.extract(carrier)
    span_context = api.trace.get_current_span(ctx).get_span_context()
    return ctx if span_context.is_valid else None


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)


@contextlib.contextmanager
def outgoing_request(
    trace: dict[str, str] | None, name: str, attributes: dict[str, Any]
) -> Iterator[tuple[dict[str, str], Any]]:
    """The trace headers of an outgoing HTTP request (a webhook delivery) of a change that carried
    ``trace``, and the span around it (None when tracing is off).

    With tracing on and a valid ``trace``, a ``CLIENT`` span child of the change's span is opened
    and its own context is sent, so the receiver continues the same trace; with tracing off (or
    opentelemetry-api not installed) the stored headers are passed on as they are. No trace: no
    headers and no span."""
    if not trace:
        yield {}, None
        return
    api = _api()
    parent = _remote_context(api, trace) if api else None
    if parent is None:
        yield {k: v for k, v in trace.items() if k in (TRACEPARENT, TRACESTATE)}, None
        return
    tracer = api.trace.get_tracer(TRACER_NAME)
    with tracer.start_as_current_span(
        name, context=parent, kind=api.trace.SpanKind.CLIENT, attributes=attributes
    ) as span:
        carrier: dict[str, str] = {}
        api.propagator.inject(carrier)
        yield carrier, span


class BatchSpans:
    """The spans of one consumed batch (see :func:`consume_spans`); :meth:`finish` records the
    per-message spans once the outcomes are known."""

    def __init__(
        self, api: Any, span: Any, parents: list[Any], attributes: dict[str, Any], started: int
    ) -> None:
        self.api = api
        self.span = span
        self.parents = parents
        self.attributes = attributes
        self.started = started

    def finish(self, outcomes: Sequence[Outcome]) -> None:
        tracer = self.api.trace.get_tracer(TRACER_NAME)
        ended = time.time_ns()
        batch_link = self.api.trace.Link(self.span.get_span_context())
        for parent, outcome in zip(self.parents, outcomes, strict=False):
            if parent is None:
                continue
            payload = outcome.payload
            attributes = dict(self.attributes)
            attributes["cqrs.outcome"] = outcome.action.value
            if outcome.status:
                attributes["cqrs.status"] = str(outcome.status)
            if outcome.reason:
                attributes["cqrs.reason"] = str(outcome.reason)
            if payload is not None:
                attributes["cqrs.id"] = str(payload.cqrs_id)
                attributes["cqrs.revision"] = (
                    int(payload.revision) if isinstance(payload.revision, int) else 0
                )
            span = tracer.start_span(
                f"{attributes.get('cqrs.id', 'cqrs')} process",
                context=parent,
                kind=self.api.trace.SpanKind.CONSUMER,
                attributes=attributes,
                links=[batch_link],
                start_time=self.started,
            )
            span.end(end_time=ended)
        self.span.set_attribute("cqrs.applied", sum(1 for o in outcomes if o.status == "applied"))


@contextlib.contextmanager
def consume_spans(
    messages: Sequence[InboundMessage], destination: str, system: str
) -> Iterator[BatchSpans | None]:
    """A span around the handling of a batch (None when tracing is off): ``messaging.system``
    ``system``, ``messaging.destination.name`` ``destination`` (the queue), linked to the trace of
    every message that carries one."""
    api = _api()
    if not api:
        yield None
        return
    parents = [_remote_context(api, m.headers) for m in messages]
    links = [
        api.trace.Link(api.trace.get_current_span(p).get_span_context())
        for p in parents
        if p is not None
    ]
    attributes: dict[str, Any] = {
        "messaging.system": system,
        "messaging.destination.name": destination,
        "messaging.operation": "process",
        "messaging.operation.type": "process",
    }
    tracer = api.trace.get_tracer(TRACER_NAME)
    started = time.time_ns()
    with tracer.start_as_current_span(
        f"{destination} process",
        kind=api.trace.SpanKind.CONSUMER,
        attributes={**attributes, "messaging.batch.message_count": len(messages)},
        links=links,
        start_time=started,
    ) as span:
        yield BatchSpans(api, span, parents, attributes, started)


__all__ = [
    "TRACEPARENT",
    "TRACESTATE",
    "active",
    "consume_spans",
    "current_context",
    "headers_of",
    "outgoing_request",
    "reset",
]
