"""Build and send replica-side messages through the memory transport."""

from __future__ import annotations

import datetime
from typing import Any

from django.utils import timezone

from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.transport.memory import MemoryTransport

UPDATED = "2024-01-02 03:04:05.678901+00:00"


def row(pk: int, revision: int, **fields: Any) -> dict[str, Any]:
    return {"id": pk, **fields, "cqrs_revision": revision, "cqrs_updated": UPDATED}


def send(
    transport: MemoryTransport,
    signal: str,
    data: dict[str, Any],
    cqrs_id: str = "simplest",
    *,
    queue: str | None = None,
    previous_data: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
    expires: datetime.datetime | None = None,
    retries: int = 0,
):
    """Publish one payload and apply everything queued; return the outcome of that payload."""
    before = len(transport.outcomes)
    transport.produce(
        TransportPayload(
            signal,
            cqrs_id,
            data,
            data.get("id"),
            queue=queue,
            previous_data=previous_data,
            meta=meta,
            expires=expires if expires is not None else timezone.now() + datetime.timedelta(hours=1),
            retries=retries,
        )
    )
    transport.join()
    return transport.outcomes[before]
