"""An OpenTelemetry SDK for the tests that look at spans, switched on only while they run.

The global tracer provider can be set once per process: it is an SDK provider whose sampler
records nothing outside :func:`recording_spans`, so the other tests (and their consumers, which
open a span per batch while opentelemetry-api is installed) pay for non-recording spans only and
no exporter grows."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    Sampler,
    SamplingResult,
)

from dj_cqrs import tracing


class _Switch(Sampler):
    """ALWAYS_ON while a test records, else ALWAYS_OFF (whatever the parent says)."""

    on = False

    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        return (ALWAYS_ON if _Switch.on else ALWAYS_OFF).should_sample(*args, **kwargs)

    def get_description(self) -> str:
        return "dj_cqrs tests switch"


EXPORTER = InMemorySpanExporter()
_installed = False


def _install() -> None:
    global _installed
    if _installed:
        return
    provider = TracerProvider(sampler=_Switch())
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(provider)
    if trace.get_tracer_provider() is not provider:
        raise RuntimeError("another tracer provider was set first: the span tests cannot record")
    _installed = True


@contextlib.contextmanager
def recording_spans() -> Iterator[InMemorySpanExporter]:
    """Spans are recorded (into the yielded exporter, emptied first) until the block ends."""
    _install()
    tracing.reset()
    EXPORTER.clear()
    _Switch.on = True
    try:
        yield EXPORTER
    finally:
        _Switch.on = False
        EXPORTER.clear()
        tracing.reset()


assert Decision  # re-exported for readers of the sampler above
