"""Domain events: publish any business event through the outbox, handle it exactly once.

* :func:`emit` - write an event (``order.paid`` of aggregate ``42``) in the current transaction;
  it is published after commit, by the same path as model events;
* :func:`register_source` / :func:`event` - events derived from a model's instances, each
  ``(name, key)`` emitted once (``manage.py cqrs_event_sources`` for time-based ones);
* :func:`handler` - run a function for the events whose name matches a pattern, in
  ``cqrs_consume`` workers, exactly once per event for its database work;
* :class:`Permanent` - raised by a handler: dead-letter the event without retries;
* :class:`Event` - what a handler receives.

See ``docs/events.md``.
"""

from __future__ import annotations

from dj_cqrs.core.event import EventPayload as Event
from dj_cqrs.events.emitting import EventSpec, emit, event
from dj_cqrs.events.registry import Handler, handler, handlers
from dj_cqrs.events.sources import register_source
from dj_cqrs.exceptions import Permanent

__all__ = [
    "Event",
    "EventSpec",
    "Handler",
    "Permanent",
    "emit",
    "event",
    "handler",
    "handlers",
    "register_source",
]
