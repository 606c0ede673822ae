"""Where master events go: into the outbox (default) or straight to the transport.

With ``master.CQRS_OUTBOX`` (default True) each event is written to the outbox inside the
transaction of the change; after commit the dispatcher publishes it at once (in a background
thread by default) and marks it published; whatever it could not publish stays in the outbox for
the relay (``cqrs_relay``) or the opportunistic sweep. With the outbox off, events are published
when the transaction commits and a failed publish raises ``PublishFailed``.
"""

from __future__ import annotations

from collections import defaultdict

from dj_cqrs import tracing
from dj_cqrs.conf import cqrs_settings
from dj_cqrs.constants import SignalType
from dj_cqrs.core.event import AnyPayload
from dj_cqrs.core.payload import TransportPayload
from dj_cqrs.master import commit_listeners, committed, payloads, pending, publisher, triggers
from dj_cqrs.master.dispatcher import dispatcher
from dj_cqrs.master.outbox import recording, store
from dj_cqrs.master.pending import PendingEvent
from dj_cqrs.transport import get_transport


def transport_resolves() -> None:
    """Resolve the transport while the change's transaction is open: a bad ``CQRS['transport']``
    (``dj_cqrs.E003``/``E004``, in a process where the system checks did not run) then fails the
    write itself, rolled back, instead of raising from the commit hook after the row and its
    outbox event were committed. Cached after the first call; not needed when only the relay
    publishes (``outbox_publish = 'relay'``)."""
    if cqrs_settings.master.outbox_publish != "relay":
        get_transport()


def _via_trigger(event: PendingEvent) -> bool:
    return event.signal is not SignalType.SYNC and triggers.active(event.model, event.using)


def add(event: PendingEvent) -> PendingEvent:
    """Record an event of the current transaction."""
    transport_resolves()
    if _via_trigger(event):
        event.via_trigger = True
        return pending.add(event, publish_committed)
    if store.enabled():
        return pending.add(event, publish_committed, on_new=recording.record, on_merge=recording.update_data)
    return pending.add(event, publish_committed)


def add_recorded(event: PendingEvent) -> PendingEvent:
    """Record an event whose outbox row the statement of the change already wrote."""
    transport_resolves()
    return pending.add(event, publish_committed)


def add_many_recorded(events: list[PendingEvent]) -> None:
    """Record events of one bulk operation (one database) whose outbox rows its statements wrote."""
    transport_resolves()
    pending.add_many(events, publish_committed)


def add_many(events: list[PendingEvent]) -> None:
    """Record events of one bulk operation (one database)."""
    if not events:
        return
    transport_resolves()
    if _via_trigger(events[0]):
        for event in events:
            event.via_trigger = True
        pending.add_many(events, publish_committed)
    elif store.enabled():
        pending.add_many(events, publish_committed, on_new_many=recording.record_many, on_merge=recording.update_data)
    else:
        pending.add_many(events, publish_committed)


def publish_committed(events: list[PendingEvent]) -> None:
    """Commit hook: publish the events of a committed transaction."""
    committed.note(events)  # read-your-writes: a recording() context collects their revisions
    direct = [e for e in events if e.outbox_id is None and not e.via_trigger]
    ordered: dict[str, list[tuple[int, AnyPayload | None]]] = defaultdict(list)
    claims: set[str] = set()
    relay_only = {u for u in {e.using for e in events if e.outbox_id is not None} if dispatcher.mode(u) == "relay"}
    for event in events:
        if event.outbox_id is not None:
            if event.using not in relay_only:  # the relay reads the rows: no payload to build
                ordered[event.using].append((event.outbox_id, payloads.snapshot_payload(event)))
        elif event.via_trigger:
            claims.add(event.using)
    trace = tracing.current_context()  # the span active at commit, if any
    if trace is not None:
        for items in ordered.values():
            for _, payload in items:
                if isinstance(payload, TransportPayload) and payload.trace is None:
                    payload.trace = trace
    if direct:
        built = payloads.payloads_for_events(direct)
        if trace is not None:
            for payload in built:
                payload.trace = trace
        publisher.publish(built)
    for using, items in ordered.items():
        dispatcher.submit(using, items)
    for using in claims:
        # The triggers wrote the rows; their ids are unknown here: publish what is pending.
        dispatcher.submit(using, [], claim=True)
    if commit_listeners.listeners:  # e.g. a webhook deliverer in this process: wake it early
        for using in {e.using for e in events if e.outbox_id is not None or e.via_trigger}:
            commit_listeners.notify(using)
