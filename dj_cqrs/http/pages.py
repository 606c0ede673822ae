"""The pages of a pull: first every current row of the model (keyset order), then its changes
from the change feed (:mod:`dj_cqrs.master.feed`), each item the body of a wire-format message.

The snapshot starts by taking the feed head, so every change committed while it is read is also
served by the feed afterwards; the replica's revision rules make the double delivery harmless.
A row inserted behind the snapshot's position comes through the feed; a row deleted while the
snapshot runs, through its DELETE.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from django.db import router

from dj_cqrs.conf import cqrs_settings
from dj_cqrs.constants import SignalType
from dj_cqrs.core.payload import TransportPayload, message_expiration
from dj_cqrs.encoding import to_json_value
from dj_cqrs.http.cursor import FEED, SNAPSHOT, Cursor
from dj_cqrs.master import feed
from dj_cqrs.master.outbox.store import enabled as outbox_enabled
from dj_cqrs.master.outbox.store import outbox_model
from dj_cqrs.master.payloads import fetch_serialized, instance_pk


class PullError(Exception):
    """A pull request that cannot be served: the HTTP status and the reason given to the client."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclasses.dataclass(frozen=True, slots=True)
class Page:
    items: list[dict[str, Any]]
    next: Cursor
    has_more: bool


def database(model: Any) -> str:
    """The alias the model's changes and outbox rows are written to (where the feed is exact)."""
    return str(router.db_for_write(model))


def max_cursor_age() -> float | None:
    """Seconds a cursor stays valid: the outbox retention, less what the feed may wait behind a
    hole (``gap_timeout``) and the clock margin; None when the outbox keeps its rows."""
    retention = cqrs_settings.master.outbox_retention
    if retention is None:
        return None
    return float(retention) - float(cqrs_settings.http.gap_timeout) - feed.CLOCK_MARGIN


def check_available() -> None:
    if not outbox_enabled():
        raise PullError(
            503,
            "pull needs the outbox: this master runs with CQRS['master']['CQRS_OUTBOX'] = False",
        )
    limit = max_cursor_age()
    if limit is not None and limit <= 0:
        # Every cursor would be refused with 410 at once: a client would start over for ever.
        raise PullError(
            503,
            f"no cursor can be served: this master's CQRS['master']['outbox_retention']"
            f" ({cqrs_settings.master.outbox_retention} s) is not longer than"
            f" CQRS['http']['gap_timeout'] ({cqrs_settings.http.gap_timeout} s) plus"
            f" {feed.CLOCK_MARGIN:g} s (see dj_cqrs.W071)",
        )


def check_age(cursor: Cursor) -> None:
    limit = max_cursor_age()
    if limit is not None and time.time() - cursor.since > limit:
        raise PullError(
            410,
            "the cursor is older than the outbox retention: changes it needs may be gone;"
            " start again without `after` (a full snapshot)",
        )


def start(model: Any) -> Cursor:
    """The cursor of a new pull: a snapshot from the first row, then the feed from its head now."""
    since = time.time()
    head = feed.head(database(model))
    return Cursor(str(model.CQRS_ID), SNAPSHOT, head, None, 0, since)


def _snapshot(model: Any, cursor: Cursor, limit: int, using: str) -> Page:
    pk_field = model._meta.pk
    rows = model._base_manager.using(using).order_by("pk")
    if cursor.last_pk is not None:
        rows = rows.filter(pk__gt=pk_field.to_python(cursor.last_pk))
    pks = list(rows.values_list("pk", flat=True)[:limit])
    current = fetch_serialized(model, using, pks) if pks else {}
    expires = message_expiration()
    items: list[dict[str, Any]] = []
    for pk in pks:
        found = current.get(str(pk))
        if found is None:
            continue  # deleted since the key was read: its DELETE is in the feed
        items.append(
            TransportPayload(
                signal_type=SignalType.SAVE,
                cqrs_id=cursor.cqrs_id,
                instance_data=found[1],
                instance_pk=instance_pk(found[0]),
                expires=expires,
                meta={},
            ).to_dict()
        )
    if len(pks) == limit:
        last = to_json_value(pks[-1])
        if not isinstance(last, (str, int, float)):
            last = str(last)
        return Page(items, dataclasses.replace(cursor, last_pk=last), True)
    done = Cursor(cursor.cqrs_id, FEED, cursor.head, None, cursor.head, cursor.since)
    return Page(items, done, True)


def _written_at(using: str, position: int) -> float | None:
    """When the outbox row at ``position`` was written (Unix time), if it is still there."""
    created = (
        outbox_model()
        .objects.using(using)
        .filter(id=position)
        .values_list("created_at", flat=True)
        .first()
    )
    return None if created is None else float(created.timestamp())


def _changes(cursor: Cursor, limit: int, using: str) -> Page:
    now = time.time()
    page = feed.read(using, cursor.position, cqrs_ids=[cursor.cqrs_id], limit=limit)
    if page.has_more:
        # A backlog follows: every row after the position took its id after the row at the
        # position did (a busy master keeps has_more true; its cursors must not age meanwhile).
        written = _written_at(using, page.position) if page.position > cursor.position else None
        since = cursor.since if written is None else max(cursor.since, written - feed.CLOCK_MARGIN)
    else:
        # Read up to the settled end: what follows was written from about now on, or is held by
        # a transaction younger than gap_timeout (see max_cursor_age).
        since = now
    following = Cursor(cursor.cqrs_id, FEED, cursor.head, None, page.position, since)
    return Page([item.body for item in page.items], following, page.has_more)


def read_page(model: Any, cursor: Cursor | None, limit: int) -> Page:
    """The page after ``cursor`` (None: a new pull) of at most ``limit`` items."""
    check_available()
    if cursor is None:
        cursor = start(model)
    else:
        check_age(cursor)
    using = database(model)
    if cursor.phase == SNAPSHOT:
        return _snapshot(model, cursor, limit, using)
    return _changes(cursor, limit, using)


__all__ = ["Page", "PullError", "check_age", "database", "max_cursor_age", "read_page", "start"]
