"""Log context helpers: every line about a message carries cqrs_id, pk, revision, correlation_id.

A domain event (:class:`~dj_cqrs.core.event.EventPayload`) fills the same fields: its routing key
as ``cqrs_id``, its key as ``pk``, its sequence number as ``revision``, ``EVENT`` as the signal;
``cqrs_event_id`` and ``cqrs_event_name`` are added.
"""

from __future__ import annotations

from typing import Any

from dj_cqrs.core.event import OUTBOX_SIGNAL, EventPayload
from dj_cqrs.core.payload import TransportPayload


def payload_context(payload: TransportPayload | EventPayload, **extra: Any) -> dict[str, Any]:
    """``extra=`` for a log call about ``payload``."""
    context = {
        "cqrs_id": payload.cqrs_id,
        "cqrs_signal": OUTBOX_SIGNAL if isinstance(payload, EventPayload) else payload.signal_type.value,
        "cqrs_pk": payload.pk,
        "cqrs_revision": payload.revision,
        "cqrs_correlation_id": payload.correlation_id,
        "cqrs_retries": payload.retries,
        "cqrs_queue": payload.queue,
    }
    if isinstance(payload, EventPayload):
        context["cqrs_event_id"] = payload.id
        context["cqrs_event_name"] = payload.name
    context.update(extra)
    return context


def describe(payload: TransportPayload | EventPayload) -> str:
    """Short human text for a payload, used inside log messages."""
    if isinstance(payload, EventPayload):
        return (
            f"event={payload.name} key={payload.key!r} seq={payload.seq} id={payload.id}"
            f" correlation_id={payload.correlation_id} retries={payload.retries}"
        )
    return (
        f"cqrs_id={payload.cqrs_id} pk={payload.pk!r} revision={payload.revision}"
        f" signal={payload.signal_type.value} correlation_id={payload.correlation_id}"
        f" retries={payload.retries}"
    )
