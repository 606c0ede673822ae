"""Metrics and trace spans around the handling of a consumed batch (every transport's loop)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from dj_cqrs.core.messages import ConsumeHandler, InboundMessage, Outcome
from dj_cqrs.metrics import recorder
from dj_cqrs.registry import replica_registry
from dj_cqrs.tracing import consume_spans


def handle_observed(
    handler: ConsumeHandler,
    batch: Sequence[InboundMessage],
    wait: Callable[[float], bool] | None,
    tick: Callable[[], None] | None,
    *,
    queue: str,
    system: str,
) -> list[Outcome]:
    """``handler(batch, wait, tick)``, timed and counted (``cqrs_apply_seconds``,
    ``cqrs_messages_*``...) when metrics are enabled, in a span when tracing is active."""
    metrics = recorder()
    with consume_spans(batch, queue, system) as spans:
        started = time.perf_counter()
        outcomes = handler(batch, wait, tick)
        elapsed = time.perf_counter() - started
        if spans is not None:
            spans.finish(outcomes)
    if metrics.enabled:
        metrics.batch(outcomes, elapsed, replica_registry.models)
    return outcomes


def dead_lettered(outcome: Outcome) -> None:
    """Count a dead letter that was not a batch outcome (a successor that could not be sent)."""
    metrics = recorder()
    if metrics.enabled:
        metrics.dead_letter(outcome, replica_registry.models)


__all__ = ["dead_lettered", "handle_observed"]
