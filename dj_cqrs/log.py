"""Log context helpers: every line about a message carries cqrs_id, pk, revision, correlation_id."""

from __future__ import annotations

from typing import Any

from dj_cqrs.core.payload import TransportPayload


def payload_context(payload: TransportPayload, **extra: Any) -> dict[str, Any]:
    """``extra=`` for a log call about ``payload``."""
    context = {
        "cqrs_id": payload.cqrs_id,
        "cqrs_signal": payload.signal_type.value,
        "cqrs_pk": payload.pk,
        "cqrs_revision": payload.revision,
        "cqrs_correlation_id": payload.correlation_id,
        "cqrs_retries": payload.retries,
        "cqrs_queue": payload.queue,
    }
    context.update(extra)
    return context


def describe(payload: TransportPayload) -> str:
    """Short human text for a payload, used inside log messages."""
    return (
        f"cqrs_id={payload.cqrs_id} pk={payload.pk!r} revision={payload.revision}"
        f" signal={payload.signal_type.value} correlation_id={payload.correlation_id}"
        f" retries={payload.retries}"
    )
