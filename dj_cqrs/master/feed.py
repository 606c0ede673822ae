"""The change feed: the master's committed changes in commit order, read from the outbox.

HTTP pull and webhook deliveries read it; a position in it is an outbox id. Outbox ids are taken
when a row is inserted, not when its transaction commits, so a reader can see id 12 before id 11
exists: a *hole*. The feed never moves past a hole that an open transaction may still fill. A hole
is *settled* when no transaction that could hold it is open any more (PostgreSQL's
``pg_stat_activity`` and MySQL's ``information_schema.innodb_trx`` are asked; SQLite never shows
one, its writers being serialized), or when it is older than ``CQRS['http']['gap_timeout']`` (then
it is skipped with a warning). Rolled-back transactions leave holes that settle at once.

A SAVE is served with the object's state as it is when read (its newest committed state, with its
``cqrs_revision``), a DELETE with what was captured at deletion, a domain event as emitted: each
item's ``body`` is exactly the body of the message the broker gets.
"""

from __future__ import annotations

import datetime
import logging
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from django.db import connections
from django.db.models import Q
from django.utils import timezone

from dj_cqrs.conf import cqrs_settings
from dj_cqrs.core.event import OUTBOX_SIGNAL, EventPayload, topic_matches
from dj_cqrs.master import payloads
from dj_cqrs.master.outbox.store import outbox_model, read_rows

logger = logging.getLogger("django-cqrs.feed")

#: Seconds between a row's ``created_at`` and the moment its id was taken, at most, plus the clock
#: difference between the hosts that write and read the outbox.
CLOCK_MARGIN = 2.0
#: Outbox ids looked at per read to find where the settled part of the feed ends.
SCAN = 5000
_EVENT_NAMESPACE = uuid.UUID("5b8f6a3e-6f35-4c53-9a4e-1d8b3f2f6c71")


@dataclass(frozen=True, slots=True)
class FeedItem:
    """One committed change (or domain event) and where it stands in the feed."""

    position: int
    #: The model's CQRS_ID, or the domain event's name.
    cqrs_id: str
    #: ``SAVE``, ``DELETE``, ``SYNC`` or ``EVENT``.
    signal: str
    #: The object's primary key as text, or the domain event's key.
    key: str
    #: The message body, as the broker gets it.
    body: dict[str, Any]
    #: Stable across reads of the same state: the domain event's id, or a UUID derived from the
    #: CQRS_ID, signal, primary key and revision of a model change.
    event_id: str
    #: The W3C trace context (``traceparent``, ``tracestate``) stored with the change when a span
    #: was active at commit (see :mod:`dj_cqrs.tracing`); None otherwise.
    trace: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class FeedPage:
    items: list[FeedItem]
    #: Where the next read starts (``after``): past every item returned and every row skipped.
    position: int
    #: True when more settled rows follow; False when the feed is read up to its settled end.
    has_more: bool


class _Unknown:
    """The database cannot say which transactions are open (no privilege, another vendor)."""


UNKNOWN = _Unknown()


def oldest_writer_age(using: str) -> float | None | _Unknown:
    """Seconds since the oldest *other* open transaction that has written started; None when
    there is none; :data:`UNKNOWN` when the database cannot tell."""
    conn = connections[using]
    vendor = conn.vendor
    if vendor == "sqlite":
        return None  # one writer at a time: the reader sees no id an open transaction holds
    try:
        with conn.cursor() as cursor:
            if vendor == "postgresql":
                cursor.execute(
                    "SELECT EXTRACT(EPOCH FROM clock_timestamp() - min(xact_start)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND backend_xid IS NOT NULL AND pid <> pg_backend_pid()"
                )
            elif vendor == "mysql":
                cursor.execute(
                    "SELECT TIMESTAMPDIFF(MICROSECOND, min(trx_started), NOW(6)) / 1000000"
                    " FROM information_schema.innodb_trx"
                    " WHERE trx_rows_modified > 0 AND trx_mysql_thread_id <> CONNECTION_ID()"
                )
            else:
                return UNKNOWN
            row = cursor.fetchone()
    except Exception as exc:  # noqa: BLE001 - a missing privilege leaves the time rule alone
        logger.debug("CQRS feed: open transactions unknown on %r: %r", using, exc)
        return UNKNOWN
    value = row[0] if row else None
    return None if value is None else max(0.0, float(value))


def _age(created_at: Any, now: Any) -> float:
    return float((now - created_at).total_seconds())


def _settled_end(using: str, after: int) -> tuple[int, bool]:
    """The last position up to which every id is committed or will never be: ``(end, more)``,
    ``more`` telling whether settled rows may follow beyond the scanned window."""
    model = outbox_model()
    rows = list(
        model.objects.using(using)
        .filter(id__gt=after)
        .order_by("id")
        .values_list("id", "created_at")[:SCAN]
    )
    gap_timeout = float(cqrs_settings.http.gap_timeout)
    now = timezone.now()
    writer_age: float | None | _Unknown = None
    asked = False
    previous = after
    for row_id, created_at in rows:
        if row_id != previous + 1:
            age = _age(created_at, now)
            if not asked:
                writer_age, asked = oldest_writer_age(using), True
            # A transaction holding the hole began before this row's id was taken.
            held = isinstance(writer_age, _Unknown) or (
                writer_age is not None and writer_age + CLOCK_MARGIN >= age
            )
            if held and age < gap_timeout:
                return previous, False
            if held:
                logger.warning(
                    "CQRS feed on %r: outbox ids %s-%s did not appear within gap_timeout (%ss); skipped",
                    using,
                    previous + 1,
                    row_id - 1,
                    gap_timeout,
                )
        previous = row_id
    return previous, len(rows) == SCAN


def head(using: str) -> int:
    """A position from which reading the feed misses no change committed from now on: the newest
    outbox id below which no open transaction holds an id (a little older when unsure)."""
    model = outbox_model()
    newest = model.objects.using(using).order_by("-id").values_list("id", flat=True).first()
    if newest is None:
        return 0
    writer_age = oldest_writer_age(using)
    if writer_age is None:
        return int(newest)
    gap_timeout = float(cqrs_settings.http.gap_timeout)
    back = (
        gap_timeout
        if isinstance(writer_age, _Unknown)
        else min(writer_age + CLOCK_MARGIN, gap_timeout)
    )
    cutoff = timezone.now() - datetime.timedelta(seconds=back)
    upper = int(newest) + 1
    while True:  # walk back in id order (an index scan) to the newest row older than the cutoff
        chunk = list(
            model.objects.using(using)
            .filter(id__lt=upper)
            .order_by("-id")
            .values_list("id", "created_at")[:1000]
        )
        for row_id, created_at in chunk:
            if created_at <= cutoff:
                return int(row_id)
        if len(chunk) < 1000:
            return 0
        upper = chunk[-1][0]


def _event_id(cqrs_id: str, signal: str, key: str, body: dict[str, Any]) -> str:
    data = body.get("instance_data") or {}
    return str(
        uuid.uuid5(
            _EVENT_NAMESPACE, f"{cqrs_id}\x00{signal}\x00{key}\x00{data.get('cqrs_revision')}"
        )
    )


def read(
    using: str,
    after: int,
    *,
    cqrs_ids: Collection[str] | None = None,
    event_patterns: Collection[str] = (),
    limit: int = 500,
) -> FeedPage:
    """Up to ``limit`` items after position ``after``, in commit order.

    ``cqrs_ids``: the models wanted (None: every model); ``event_patterns``: the domain events
    wanted, as AMQP topic patterns over their names (none: no domain events).
    """
    end, more = _settled_end(using, after)
    if end <= after:
        return FeedPage([], after, more)
    model = outbox_model()
    wanted = Q()
    if cqrs_ids is None:
        wanted = ~Q(signal_type=OUTBOX_SIGNAL)
    elif cqrs_ids:
        wanted = Q(cqrs_id__in=list(cqrs_ids)) & ~Q(signal_type=OUTBOX_SIGNAL)
    if event_patterns:
        wanted = wanted | Q(signal_type=OUTBOX_SIGNAL) if wanted else Q(signal_type=OUTBOX_SIGNAL)
    if not wanted:
        return FeedPage([], end, more)
    qs = model.objects.using(using).filter(wanted, id__gt=after, id__lte=end).order_by("id")
    rows = read_rows(qs[:limit])
    if len(rows) == limit:
        position, has_more = rows[-1].pk, True
    else:
        position, has_more = end, more
    if event_patterns:
        rows = [
            row
            for row in rows
            if row.signal_type != OUTBOX_SIGNAL
            or any(topic_matches(p, row.cqrs_id) for p in event_patterns)
        ]
    items: list[FeedItem] = []
    for row, payload in payloads.payloads_for_rows(rows, using):
        if payload is None:
            continue  # a SAVE of an object deleted since: its DELETE follows in the feed
        body = payload.to_dict()
        if isinstance(payload, EventPayload):
            event_id = payload.id
        else:
            event_id = _event_id(row.cqrs_id, row.signal_type, row.object_pk, body)
        trace = payload.trace
        items.append(
            FeedItem(
                row.pk,
                row.cqrs_id,
                row.signal_type,
                row.object_pk,
                body,
                event_id,
                dict(trace) if trace else None,
            )
        )
    return FeedPage(items, position, has_more)
