"""Applied-change notifications (PostgreSQL), for :func:`dj_cqrs.replica.wait_for`.

Each transaction that applies messages of a replica model sends ``NOTIFY`` on the model's channel
(:func:`channel`), delivered by PostgreSQL when the transaction commits, so a waiter listening on
it wakes once the change is visible. One ``pg_notify`` per transaction (a batch of a model, or
one message on the per-message path); none on other databases, or with
``replica.notify_applied = False``.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.db import connections

from dj_cqrs.conf import cqrs_settings

#: PostgreSQL identifiers (channel names) are at most 63 bytes.
_MAX_CHANNEL = 63


def channel(cqrs_id: str) -> str:
    """The notification channel of a CQRS_ID: ``cqrs_<cqrs_id>``, or a digest when too long."""
    name = f"cqrs_{cqrs_id}"
    if len(name.encode("utf-8")) > _MAX_CHANNEL:
        name = "cqrs_" + hashlib.sha1(cqrs_id.encode("utf-8")).hexdigest()  # noqa: S324 - a name, not security
    return name


def enabled(using: str) -> bool:
    return connections[using].vendor == "postgresql" and bool(cqrs_settings.replica.notify_applied)


def applied(model: Any, using: str) -> None:
    """Inside the apply transaction: announce that ``model`` changed (sent at commit)."""
    if not enabled(using):
        return
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, '')", [channel(model.CQRS_ID)])


__all__ = ["applied", "channel", "enabled"]
