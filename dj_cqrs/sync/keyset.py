"""Keyset pagination: ``WHERE pk > last ORDER BY pk LIMIT n``, one query per batch.

Unlike OFFSET paging (django-cqrs's ``batch_qs`` clears the ordering), a row is never skipped or
returned twice while other transactions insert, update or delete rows, the cost of a page does
not grow with its position, and memory stays at one batch. Works for any primary key type the
database can order (integers, UUIDs, strings).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from django.db import models

from dj_cqrs.database import call_through_outages

logger = logging.getLogger("django-cqrs.sync")

T = TypeVar("T")


def _row_pk(row: Any) -> Any:
    if isinstance(row, models.Model):
        return row.pk
    if isinstance(row, dict):
        return row["pk"]
    return row[0]


def pk_batches(
    queryset: models.QuerySet[Any],
    batch_size: int,
    *,
    key: Callable[[Any], Any] = _row_pk,
) -> Iterator[list[Any]]:
    """Yield lists of at most ``batch_size`` rows of ``queryset`` in primary-key order.

    ``queryset`` may be a model, ``values()`` or ``values_list()`` queryset; for the latter two the
    primary key must be the first column (or ``"pk"`` key); ``key`` extracts it otherwise. Any
    ordering of ``queryset`` is replaced by the primary key. Through a database outage (a restart
    or failover during a long run, see :func:`fetch_with_reconnect`) the current batch is read
    again once the database is back, which is exact because the position is a key, not an offset.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    ordered = queryset.order_by("pk")
    last: Any = None
    started = False
    while True:
        page = ordered.filter(pk__gt=last) if started else ordered
        rows: list[Any] = fetch_with_reconnect(lister(page[:batch_size]), queryset.db)
        if not rows:
            return
        yield rows
        if len(rows) < batch_size:
            return
        last = key(rows[-1])
        started = True


def lister(queryset: Any) -> Callable[[], list[Any]]:
    def fetch() -> list[Any]:
        return list(queryset)

    return fetch


def fetch_with_reconnect(fetch: Callable[[], T], using: str) -> T:
    """Run a read; through a database outage (:func:`dj_cqrs.database.is_outage`: refused,
    restarting, connection lost) wait with back-off and run it again once the database is back,
    however long that takes (one WARNING when the outage starts, one INFO when it ends). Inside a
    transaction, or for any other error, the error is raised."""
    return call_through_outages(fetch, what=f"database {using!r}", using=using, log=logger)
