"""django-cqrs import path: ``produce(payload)`` publishes through the configured transport."""

from __future__ import annotations

from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.master.publisher import publish


def produce(payload: TransportPayload) -> None:
    """Publish one payload; raises ``PublishFailed`` when it cannot be delivered."""
    publish([payload])


__all__ = ["produce"]
