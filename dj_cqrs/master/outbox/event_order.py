"""Per-key publication order of domain events (``signal_type`` ``EVENT`` outbox rows).

Emitters of one key are ordered by commit (the key's sequence row lock), so per key the outbox ids
follow the sequence. Publishers must not reorder them: a publisher never sends an event while an
older unpublished event of the same key exists outside what it is publishing.

* The dispatcher (right after commit, holding no outbox lock yet) *waits*: it locks the older
  pending events of its keys (``SELECT ... FOR UPDATE``, in id order, so two dispatchers never
  deadlock), which blocks while another publisher is sending them; those still pending once locked
  are published first, with its own.
* The relay and the sweep, which hold locks on a batch already, *hold back* an event whose key has
  an older pending event outside their batch; their next pass publishes it.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connections
from django.db.models import Min

from dj_cqrs.core.event import OUTBOX_SIGNAL
from dj_cqrs.master.outbox.store import OutboxRow, outbox_model


def lock_older(using: str, keys: Iterable[str], before: int, ours: set[int]) -> list[int]:
    """Lock (waiting for other publishers) the pending events of ``keys`` older than ``before``
    that are not ``ours``; return the ids still pending, oldest first. Call inside the
    publishing transaction, before it claims anything."""
    keys = list(set(keys))
    if not keys:
        return []
    conn = connections[using]
    if conn.vendor == "postgresql":
        # the partial index of pending rows, read as an index: a bitmap scan visits every entry
        # of rows published since the last vacuum, each time (as in the relay's claim)
        with conn.cursor() as cursor:
            cursor.execute("SET LOCAL enable_bitmapscan TO OFF")
    qs = (
        outbox_model()
        .objects.using(using)
        .filter(signal_type=OUTBOX_SIGNAL, published_at__isnull=True, object_pk__in=keys, id__lt=before)
        .exclude(id__in=ours)
        .order_by("id")
        .select_for_update()
    )
    return [int(i) for i in qs.values_list("id", flat=True)]


def held_back(using: str, rows: list[OutboxRow], ours: set[int]) -> set[int]:
    """Ids of the event rows among ``rows`` whose key has an older pending event outside
    ``ours`` (the rows the caller is publishing in this transaction)."""
    events = [row for row in rows if row.signal_type == OUTBOX_SIGNAL]
    if not events:
        return set()
    oldest = dict(
        outbox_model()
        .objects.using(using)
        .filter(
            signal_type=OUTBOX_SIGNAL,
            published_at__isnull=True,
            object_pk__in={row.object_pk for row in events},
            id__lt=max(row.pk for row in events),
        )
        .exclude(id__in=ours)
        .values("object_pk")
        .annotate(first=Min("id"))
        .values_list("object_pk", "first")
    )
    return {row.pk for row in events if row.object_pk in oldest and oldest[row.object_pk] < row.pk}


__all__ = ["held_back", "lock_older"]
