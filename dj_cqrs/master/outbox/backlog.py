"""The outbox backlog per ``CQRS_ID``: pending rows and the age of the oldest (for the
``cqrs_outbox_*`` gauges, computed when they are scraped)."""

from __future__ import annotations

import datetime
from collections.abc import Iterable

from django.db import connections
from django.db.models import Count, Min
from django.utils import timezone

from dj_cqrs.master.outbox.store import outbox_model


def pending_by_cqrs_id(databases: Iterable[str]) -> list[tuple[str, int, float]]:
    """``(cqrs_id, pending rows, seconds since the oldest was recorded)`` over ``databases``
    (summed; the oldest of all), sorted by ``cqrs_id``."""
    now = timezone.now()
    totals: dict[str, tuple[int, datetime.datetime | None]] = {}
    for alias in databases:
        rows = (
            outbox_model()
            .objects.using(alias)
            .filter(published_at__isnull=True)
            .values("cqrs_id")
            .annotate(pending=Count("id"), oldest=Min("created_at"))
            .order_by()
        )
        for row in rows:
            count, oldest = totals.get(row["cqrs_id"], (0, None))
            first = row["oldest"]
            if oldest is None or (first is not None and first < oldest):
                oldest = first
            totals[row["cqrs_id"]] = (count + row["pending"], oldest)
    return [
        (cqrs_id, count, max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0)
        for cqrs_id, (count, oldest) in sorted(totals.items())
    ]


def pending_everywhere(close_connections: bool = False) -> list[tuple[str, int, float]]:
    """:func:`pending_by_cqrs_id` over every database with the outbox table, and ``(cqrs_id, 0,
    0.0)`` for each master model with nothing pending: an empty backlog reads 0, not "no data".
    ``close_connections``: the caller's thread does nothing else with the database (a metrics
    server's thread)."""
    from dj_cqrs.master.relay import outbox_databases
    from dj_cqrs.registry import master_registry

    try:
        found = pending_by_cqrs_id(outbox_databases())
    finally:
        if close_connections:
            for alias in connections:
                connections[alias].close()
    seen = {cqrs_id for cqrs_id, _, _ in found}
    idle = {model.CQRS_ID for model in master_registry} - seen
    return sorted(found + [(cqrs_id, 0, 0.0) for cqrs_id in idle])


__all__ = ["pending_by_cqrs_id", "pending_everywhere"]
