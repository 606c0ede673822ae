"""Keyset pagination: ``WHERE pk > last ORDER BY pk LIMIT n``, one query per batch.

Unlike OFFSET paging (django-cqrs's ``batch_qs`` clears the ordering), a row is never skipped or
returned twice while other transactions insert, update or delete rows, the cost of a page does
not grow with its position, and memory stays at one batch. Works for any primary key type the
database can order (integers, UUIDs, strings).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from django.db import InterfaceError, OperationalError, connections, models

logger = logging.getLogger("django-cqrs.sync")

T = TypeVar("T")

#: How many times a batch query is retried after the database connection was lost.
RECONNECT_ATTEMPTS = 3
RECONNECT_DELAY = 1.0


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
    reconnect_attempts: int = RECONNECT_ATTEMPTS,
    reconnect_delay: float = RECONNECT_DELAY,
) -> Iterator[list[Any]]:
    """Yield lists of at most ``batch_size`` rows of ``queryset`` in primary-key order.

    ``queryset`` may be a model, ``values()`` or ``values_list()`` queryset; for the latter two the
    primary key must be the first column (or ``"pk"`` key); ``key`` extracts it otherwise. Any
    ordering of ``queryset`` is replaced by the primary key. When the database connection is lost
    (e.g. a restart during a long run), the current batch is retried on a new connection, which
    is exact because the position is a key, not an offset.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    ordered = queryset.order_by("pk")
    last: Any = None
    started = False
    while True:
        page = ordered.filter(pk__gt=last) if started else ordered
        rows: list[Any] = fetch_with_reconnect(
            lister(page[:batch_size]),
            queryset.db,
            attempts=reconnect_attempts,
            delay=reconnect_delay,
        )
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


def fetch_with_reconnect(fetch: Callable[[], T], using: str, *, attempts: int = RECONNECT_ATTEMPTS, delay: float = RECONNECT_DELAY) -> T:
    """Run a read, reconnecting and retrying when the connection was lost (outside transactions)."""
    attempt = 0
    while True:
        try:
            return fetch()
        except (OperationalError, InterfaceError) as exc:
            connection = connections[using]
            if connection.in_atomic_block or attempt >= attempts or not _is_connection_loss(exc, using):
                raise
            attempt += 1
            logger.warning(
                "Database connection lost (%s); reconnecting, attempt %s of %s", exc, attempt, attempts
            )
            connection.close()
            time.sleep(delay * attempt)


def _is_connection_loss(exc: BaseException, using: str) -> bool:
    from dj_cqrs.replica.consumer import is_connection_lost

    return is_connection_lost(exc)
