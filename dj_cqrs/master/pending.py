"""Events collected during a database transaction and published when it commits.

One :class:`TransactionEvents` lives on the connection of the database the change was written to
(multi-DB safe: the commit hook is registered with ``using=``). It keeps one event per object per
transaction: later saves of the same row merge into the pending SAVE, and the SAVE is serialized at
commit time so it carries the final state.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from typing import Any

from django.db import connections, models, transaction

from dj_cqrs.constants import SignalType

_CONN_ATTR = "_dj_cqrs_transaction_events"
_tokens = itertools.count(1)


@dataclasses.dataclass
class PendingEvent:
    """An event waiting for its transaction to commit."""

    signal: SignalType
    model: Any  # a master model class
    pk: Any
    using: str
    instance: Any = None  # the saved master instance
    previous_data: dict[str, Any] | None = None
    #: DELETE: ``instance_data`` captured at delete time.
    instance_data: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None
    queue: str | None = None
    #: The revision the row has in this transaction (after its bump).
    revision: int | None = None
    #: Free slot for the outbox (the id of its row).
    outbox_id: Any = None
    #: Written to the outbox by the table's triggers (``CQRS_DB_TRIGGERS``), not by Python.
    via_trigger: bool = False
    #: A save of this object happened inside a savepoint (which may have been rolled back since):
    #: its in-memory state may not be the committed one.
    in_savepoint: bool = False
    #: Captured at change time by the outbox.
    correlation_id: str | None = None
    #: Memory may not hold what the database stored (a partial ``update_fields`` save, a
    #: ``bulk_create`` that ignores conflicts): the publisher reads the row.
    must_read: bool = False
    #: Registered with ``on_commit`` when the event is recorded inside a savepoint: Django drops it
    #: if that savepoint rolls back, which tells the event is dead.
    marker: Any = None
    #: A save that publishes nothing (``CQRS_PRODUCE=False`` or ``is_sync_instance()`` False): it is
    #: kept only so that the row's revision is bumped once per transaction.
    silent: bool = False
    #: Whether the last :meth:`merge_save` changed ``previous_data`` (the outbox row must follow).
    previous_changed: bool = False

    @property
    def cqrs_id(self) -> str:
        return self.model.CQRS_ID  # type: ignore[attr-defined,no-any-return]

    def merge_save(self, instance: models.Model, previous_data: dict[str, Any] | None) -> None:
        """Another save of the same row in the same transaction."""
        self.instance = instance
        if connections[self.using].savepoint_ids:
            self.in_savepoint = True
        self.previous_changed = False
        if previous_data is not None:
            merged = dict(previous_data)
            merged.update(self.previous_data or {})  # the first-seen old values win
            self.previous_changed = merged != self.previous_data
            self.previous_data = merged


Flusher = Callable[[list[PendingEvent]], None]


class _Marker:
    """A no-op commit hook whose presence in ``connection.run_on_commit`` proves that the savepoint
    it was registered in has not been rolled back."""

    __slots__ = ("index", "fired")

    def __init__(self) -> None:
        self.index = -1
        self.fired = False

    def __call__(self) -> None:
        self.fired = True


def _registered(conn: Any, hook: Any, hint: int) -> tuple[bool, int]:
    """Whether ``hook`` is still in the connection's commit hooks (O(1) when nothing before it was
    dropped; a scan otherwise)."""
    callbacks = getattr(conn, "run_on_commit", None)
    if callbacks is None:  # pragma: no cover - Django always has it
        return True, hint
    if 0 <= hint < len(callbacks) and callbacks[hint][1] is hook:
        return True, hint
    for index, entry in enumerate(callbacks):
        if entry[1] is hook:
            return True, index
    return False, -1


def _register(conn: Any, hook: Any, using: str) -> int:
    transaction.on_commit(hook, using=using)
    return len(conn.run_on_commit) - 1


class TransactionEvents:
    """Pending events of one transaction on one connection."""

    def __init__(self, using: str, flusher: Flusher) -> None:
        self.using = using
        #: Identifies this transaction (kept on instances for ``cqrs_saves_count``; picklable).
        self.token = next(_tokens)
        self.events: dict[tuple[str, Any], list[PendingEvent]] = {}
        self._flusher = flusher
        self.callback = self._on_commit
        self._index = -1
        self._markers: dict[tuple[Any, ...], _Marker] = {}

    def register(self) -> None:
        self._index = _register(connections[self.using], self.callback, self.using)

    def _on_commit(self) -> None:
        conn = connections[self.using]
        if getattr(conn, _CONN_ATTR, None) is self:
            setattr(conn, _CONN_ATTR, None)
        events = [
            e
            for group in self.events.values()
            for e in group
            if not e.silent and (e.marker is None or e.marker.fired)  # not rolled back with a savepoint
        ]
        self.events = {}
        if events:
            self._flusher(events)

    def is_live(self) -> bool:
        """False once the transaction it belongs to was rolled back."""
        conn = connections[self.using]
        if not conn.in_atomic_block:
            return False
        live, self._index = _registered(conn, self.callback, self._index)
        return live

    def mark(self, event: PendingEvent) -> None:
        """Give an event recorded inside a savepoint the marker of that savepoint."""
        conn = connections[self.using]
        if not conn.savepoint_ids:
            return
        key = tuple(conn.savepoint_ids)
        marker = self._markers.get(key)
        if marker is None or not self.event_is_live_marker(marker):
            marker = _Marker()
            marker.index = _register(conn, marker, self.using)
            self._markers[key] = marker
            self._run_last(conn)
        event.marker = marker

    def _run_last(self, conn: Any) -> None:
        """Move this transaction's commit hook after the markers, so that when it runs, the
        markers of the savepoints that were not rolled back have fired."""
        live, index = _registered(conn, self.callback, self._index)
        if live:
            entry = conn.run_on_commit.pop(index)
            conn.run_on_commit.append(entry)
            self._index = len(conn.run_on_commit) - 1

    def event_is_live_marker(self, marker: _Marker) -> bool:
        live, marker.index = _registered(connections[self.using], marker, marker.index)
        return live

    def event_is_live(self, event: PendingEvent) -> bool:
        """False when the savepoint the event was recorded in has been rolled back."""
        return event.marker is None or self.event_is_live_marker(event.marker)

    def find(self, cqrs_id: str, pk: Any) -> PendingEvent | None:
        """The last SAVE or DELETE of this object in the transaction."""
        for event in reversed(self.events.get((cqrs_id, pk), ())):
            if event.signal is not SignalType.SYNC:
                return event
        return None

    def add(self, event: PendingEvent) -> PendingEvent:
        key = (event.cqrs_id, event.pk)
        group = self.events.setdefault(key, [])
        self.mark(event)
        if event.signal is SignalType.SYNC:
            group.append(event)
            return event
        last = self.find(*key)
        if last is not None and not self.event_is_live(last):
            # Recorded in a savepoint that was rolled back since: it never happened.
            group[:] = [e for e in group if self.event_is_live(e)]
            last = self.find(*key)
        if (
            last is not None
            and event.signal is SignalType.SAVE
            and last.signal is SignalType.SAVE
            and event.instance is not None
        ):
            last.merge_save(event.instance, event.previous_data)
            last.silent = last.silent and event.silent
            last.must_read = last.must_read or event.must_read
            if event.revision is not None:
                last.revision = event.revision
            if event.marker is not None and last.marker is None:
                # Changed again inside a savepoint: memory may be rolled back under us.
                last.in_savepoint = True
            return last
        # A SAVE followed by a DELETE keeps both: the DELETE may still be rolled back with its
        # savepoint, and the publisher skips a SAVE whose row is gone at commit.
        group.append(event)
        return event


def current(using: str) -> TransactionEvents | None:
    """The live pending-event set of the current transaction on ``using``, if any."""
    conn = connections[using]
    state: TransactionEvents | None = getattr(conn, _CONN_ATTR, None)
    if state is not None and not state.is_live():
        setattr(conn, _CONN_ATTR, None)
        return None
    return state


def ensure(using: str, flusher: Flusher) -> TransactionEvents:
    """The pending-event set of the current transaction on ``using`` (created if needed)."""
    state = current(using)
    if state is None:
        state = TransactionEvents(using, flusher)
        setattr(connections[using], _CONN_ATTR, state)
        state.register()
    return state


def find(using: str, cqrs_id: str, pk: Any) -> PendingEvent | None:
    state = current(using)
    return None if state is None else state.find(cqrs_id, pk)


def add(
    event: PendingEvent,
    flusher: Flusher,
    on_new: Callable[[PendingEvent], None] | None = None,
    on_merge: Callable[[PendingEvent], None] | None = None,
) -> PendingEvent:
    """Record ``event`` for the commit of the current transaction; publish now in autocommit.

    ``on_new`` runs for an event that is new in this transaction, ``on_merge`` when it merged
    into an earlier event of the same object (both inside the transaction).
    """
    conn = connections[event.using]
    if not conn.in_atomic_block:
        if on_new is not None and not event.silent:
            on_new(event)
        if not event.silent:
            flusher([event])
        return event
    result = ensure(event.using, flusher).add(event)
    _after_add(event, result, on_new, on_merge)
    return result


def _after_add(
    event: PendingEvent,
    result: PendingEvent,
    on_new: Callable[[PendingEvent], None] | None,
    on_merge: Callable[[PendingEvent], None] | None,
) -> None:
    if result.silent:
        return
    if result is event or result.outbox_id is None:
        # New in this transaction (or a silent save that now publishes).
        if on_new is not None:
            on_new(result)
    elif on_merge is not None:
        on_merge(result)


def add_many(
    events: list[PendingEvent],
    flusher: Flusher,
    on_new_many: Callable[[list[PendingEvent]], None] | None = None,
    on_merge: Callable[[PendingEvent], None] | None = None,
) -> None:
    """:func:`add` for many events of one database (bulk operations)."""
    if not events:
        return
    using = events[0].using
    conn = connections[using]
    loud = [e for e in events if not e.silent]
    if not conn.in_atomic_block:
        if loud and on_new_many is not None:
            on_new_many(loud)
        if loud:
            flusher(loud)
        return
    state = ensure(using, flusher)
    new: list[PendingEvent] = []
    for event in events:
        result = state.add(event)
        if result.silent:
            continue
        if result is event or result.outbox_id is None:
            new.append(result)
        elif on_merge is not None:
            on_merge(result)
    if new and on_new_many is not None:
        on_new_many(new)
