"""Outbox housekeeping: failed attempts on pending rows, the age of the backlog, pruning."""

from __future__ import annotations

import datetime
import logging

from django.db.models import F
from django.utils import timezone

from dj_cqrs.master.outbox.store import outbox_model

logger = logging.getLogger("django-cqrs.outbox")


def note_failure(using: str, ids: list[int], error: BaseException) -> None:
    """Count a failed attempt on rows that stay in the outbox (best effort)."""
    try:
        outbox_model().objects.using(using).filter(id__in=ids, published_at__isnull=True).update(
            attempts=F("attempts") + 1, last_error=repr(error)[:2000]
        )
    except Exception:  # noqa: BLE001 - the database may be what failed; the rows stay pending anyway
        logger.debug("Could not record the outbox failure", exc_info=True)


def oldest_pending_age(using: str) -> float | None:
    created = (
        outbox_model().objects.using(using).filter(published_at__isnull=True).order_by("id").values_list("created_at", flat=True).first()
    )
    if created is None:
        return None
    return (timezone.now() - created).total_seconds()


def prune(using: str, retention: float, chunk: int = 5000, max_rows: int | None = None) -> int:
    """Delete published rows older than ``retention`` seconds (at most ``max_rows``); return how many."""
    model = outbox_model()
    cutoff = timezone.now() - datetime.timedelta(seconds=retention)
    total = 0
    while max_rows is None or total < max_rows:
        ids = list(
            model.objects.using(using).filter(published_at__lt=cutoff).order_by("id").values_list("id", flat=True)[:chunk]
        )
        if not ids:
            return total
        total += model.objects.using(using).filter(id__in=ids).delete()[0]
    return total
