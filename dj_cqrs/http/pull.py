"""``cqrs_pull``'s loop: fetch a page from the master, apply it through the replica's batch path,
store the cursor; with ``follow``, keep polling.

Items are applied exactly as broker messages are (:func:`dj_cqrs.replica.batch.handle_batch`:
revision guard, tombstones, set-based writes). The cursor (:class:`dj_cqrs.models.PullCursor`) is
saved right after a page is applied in full, in its own transaction: the replica's writes may
span several databases and the per-message path commits on its own, so one transaction cannot
hold both. A crash in between applies the page again on restart, which the revision rules make
harmless (an equal or older revision is ignored, a DELETE leaves a tombstone).

An item that fails is retried per the replica's retry policy (``CQRS_MAX_RETRIES``, delays and the
model's hooks); when it is given up, the pull stops with :class:`ApplyFailed` without moving the
cursor past it: the next run starts with that page again.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from django.apps import apps
from django.utils import timezone

from dj_cqrs import encoding
from dj_cqrs.conf import cqrs_settings
from dj_cqrs.core.messages import Action, InboundMessage, Outcome
from dj_cqrs.core.settlement import failure_headers, retry_body
from dj_cqrs.http.client import PullClient, Stopped
from dj_cqrs.process.lifecycle import StopFlag
from dj_cqrs.replica.batch import handle_batch_through_outages

if TYPE_CHECKING:
    from dj_cqrs.models import PullCursor

logger = logging.getLogger("django-cqrs.http")


def _cursor_model() -> type[PullCursor]:
    """The cursor model, from the app registry (nothing is imported from ``dj_cqrs.models`` while
    this module is imported)."""
    return cast("type[PullCursor]", apps.get_model("dj_cqrs", "PullCursor"))


class ApplyFailed(Exception):
    """An item could not be applied after its retries; the cursor stays before its page."""


@dataclasses.dataclass
class PullResult:
    pages: int = 0
    items: int = 0
    #: True once the initial pass is over: a page said nothing more is to come (the snapshot
    #: always ends with ``has_more``, so this is the feed read up to its end).
    caught_up: bool = False
    stopped: bool = False


def _describe(message: InboundMessage, outcome: Outcome) -> str:
    pk = getattr(outcome.payload, "pk", None)
    return f"{outcome.reason or outcome.action.value} for pk={pk!r}: {outcome.detail}".rstrip(": ")


def apply_items(items: list[dict[str, Any]], cqrs_id: str, stop: StopFlag) -> None:
    """Apply the bodies of a page in order, retrying failures per the replica retry policy;
    :class:`ApplyFailed` when one is given up, :class:`Stopped` when asked to stop first."""
    size = int(cqrs_settings.replica.CQRS_BATCH_SIZE)
    for start in range(0, len(items), size):
        messages = [
            InboundMessage(
                encoding.dumps_bytes(encoding.restore_exact(body), allow_nan=True), cqrs_id
            )
            for body in items[start : start + size]
        ]
        while messages:
            outcomes = handle_batch_through_outages(messages, stop.wait)
            retries: list[InboundMessage] = []
            delay = 0.0
            for message, outcome in zip(messages, outcomes, strict=True):
                if outcome.action is Action.ACK:
                    continue
                if outcome.action is Action.REQUEUE:
                    raise Stopped("stopped while the replica database was unreachable")
                if outcome.action is Action.RETRY and outcome.payload is not None:
                    headers = failure_headers(message, outcome)
                    retries.append(InboundMessage(retry_body(outcome.payload), cqrs_id, headers))
                    delay = max(delay, outcome.delay)
                    continue
                raise ApplyFailed(
                    f"{cqrs_id}: an item could not be applied ({_describe(message, outcome)})"
                )
            if retries and stop.wait(delay):
                raise Stopped("stopped while waiting to retry an item")
            messages = retries


def cursor_row(source: str, cqrs_id: str, reset: bool = False) -> PullCursor:
    """The stored cursor of ``source`` and ``cqrs_id`` (created empty); ``reset`` empties it."""
    row, _ = _cursor_model().objects.get_or_create(
        source=source, cqrs_id=cqrs_id, defaults={"updated_at": timezone.now()}
    )
    if reset and (row.cursor or row.items or row.caught_up):
        row.cursor, row.items, row.caught_up, row.updated_at = "", 0, False, timezone.now()
        row.save(update_fields=["cursor", "items", "caught_up", "updated_at"])
    return row


def run(
    client: PullClient,
    cqrs_id: str,
    *,
    limit: int | None = None,
    follow: bool = False,
    interval: float = 1.0,
    reset: bool = False,
    stop: StopFlag | None = None,
    on_page: Callable[[int, bool], None] | None = None,
) -> PullResult:
    """Pull ``cqrs_id`` from ``client``'s master from the stored cursor until caught up (or, with
    ``follow``, until ``stop`` is set). ``on_page(items, caught_up)`` is called after each page.
    Raises :class:`ApplyFailed` and the client's errors; a stop ends it with ``stopped=True``."""
    stop = stop or client.stop
    row = cursor_row(client.url, cqrs_id, reset)
    result = PullResult(caught_up=row.caught_up)
    while not stop.is_set():
        try:
            page = client.fetch(cqrs_id, row.cursor or None, limit)
            items = page["items"]
            apply_items(items, cqrs_id, stop)
        except Stopped:
            break
        next_cursor = page.get("next")
        if not isinstance(next_cursor, str) or not next_cursor:
            raise ApplyFailed(f"{cqrs_id}: the master's page has no `next` cursor")
        has_more = bool(page.get("has_more"))
        row.cursor = next_cursor
        row.items += len(items)
        row.caught_up = row.caught_up or not has_more
        row.updated_at = timezone.now()
        row.save(update_fields=["cursor", "items", "caught_up", "updated_at"])
        result.pages += 1
        result.items += len(items)
        result.caught_up = row.caught_up
        if on_page is not None:
            on_page(len(items), row.caught_up)
        if not has_more:
            if not follow:
                return result
            if stop.wait(interval):
                break
    result.stopped = True
    return result


__all__ = ["ApplyFailed", "PullResult", "apply_items", "cursor_row", "run"]
