"""Where committed events go: straight to the transport (this module) or, later, an outbox."""

from __future__ import annotations

from dj_cqrs.master import publisher
from dj_cqrs.master.pending import PendingEvent


def flush(events: list[PendingEvent]) -> None:
    """Publish the events of a committed transaction; raises ``PublishFailed`` on failure."""
    publisher.flush(events)
