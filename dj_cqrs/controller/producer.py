"""django-cqrs import path: ``produce(payload)`` publishes through the configured transport.

The outbox publishes every committed event through this function (looked up at call time) unless
the transport batches and the function is not patched, so a test suite written for django-cqrs
that patches ``dj_cqrs.controller.producer.produce`` sees each event once, in the committing
thread (see :func:`dj_cqrs.master.publisher.publish`).
"""

from __future__ import annotations

from dj_cqrs.core.payload import TransportPayload
from dj_cqrs.master.publisher import send


def produce(payload: TransportPayload) -> None:
    """Publish one payload; raises ``PublishFailed`` when it cannot be delivered."""
    send(payload)


produce.dj_cqrs_native = True  # type: ignore[attr-defined]

__all__ = ["produce"]
