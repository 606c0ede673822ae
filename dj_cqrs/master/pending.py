"""Events collected during a database transaction and published when it commits.

One :class:`TransactionEvents` lives on the connection of the database the change was written to
(multi-DB safe: the commit hook is registered with ``using=``). It keeps one event per object per
transaction: later saves of the same row merge into the pending SAVE, and the SAVE is serialized at
commit time so it carries the final state.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import TYPE_CHECKING, Any, Callable

from django.db import connections, transaction

from dj_cqrs.constants import SignalType

if TYPE_CHECKING:
    from django.db import models

_CONN_ATTR = "_dj_cqrs_transaction_events"
_tokens = itertools.count(1)


@dataclasses.dataclass
class PendingEvent:
    """An event waiting for its transaction to commit."""

    signal: SignalType
    model: type[models.Model]
    pk: Any
    using: str
    instance: models.Model | None = None
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
    #: A save that publishes nothing (``CQRS_PRODUCE=False`` or ``is_sync_instance()`` False): it is
    #: kept only so that the row's revision is bumped once per transaction.
    silent: bool = False

    @property
    def cqrs_id(self) -> str:
        return self.model.CQRS_ID  # type: ignore[attr-defined,no-any-return]

    def merge_save(self, instance: models.Model, previous_data: dict[str, Any] | None) -> None:
        """Another save of the same row in the same transaction."""
        self.instance = instance
        if connections[self.using].savepoint_ids:
            self.in_savepoint = True
        if previous_data is not None:
            merged = dict(previous_data)
            merged.update(self.previous_data or {})  # the first-seen old values win
            self.previous_data = merged


Flusher = Callable[[list[PendingEvent]], None]


class TransactionEvents:
    """Pending events of one transaction on one connection."""

    def __init__(self, using: str, flusher: Flusher) -> None:
        self.using = using
        #: Identifies this transaction (kept on instances for ``cqrs_saves_count``; picklable).
        self.token = next(_tokens)
        self.events: dict[tuple[str, Any], list[PendingEvent]] = {}
        self._flusher = flusher
        self.callback = self._on_commit

    def _on_commit(self) -> None:
        conn = connections[self.using]
        if getattr(conn, _CONN_ATTR, None) is self:
            setattr(conn, _CONN_ATTR, None)
        events = [e for group in self.events.values() for e in group if not e.silent]
        self.events = {}
        if events:
            self._flusher(events)

    def is_live(self) -> bool:
        """False once the transaction it belongs to was rolled back."""
        conn = connections[self.using]
        if not conn.in_atomic_block:
            return False
        callbacks = getattr(conn, "run_on_commit", None)
        if callbacks is None:  # pragma: no cover - Django always has it
            return True
        return any(entry[1] is self.callback for entry in callbacks)

    def find(self, cqrs_id: str, pk: Any) -> PendingEvent | None:
        """The last SAVE or DELETE of this object in the transaction."""
        for event in reversed(self.events.get((cqrs_id, pk), ())):
            if event.signal is not SignalType.SYNC:
                return event
        return None

    def add(self, event: PendingEvent) -> PendingEvent:
        key = (event.cqrs_id, event.pk)
        group = self.events.setdefault(key, [])
        if event.signal is SignalType.SYNC:
            group.append(event)
            return event
        last = self.find(*key)
        if (
            last is not None
            and event.signal is SignalType.SAVE
            and last.signal is SignalType.SAVE
            and event.instance is not None
        ):
            last.merge_save(event.instance, event.previous_data)
            last.silent = last.silent and event.silent
            if event.revision is not None:
                last.revision = event.revision
            return last
        if last is not None and event.signal is SignalType.DELETE and last.signal is SignalType.SAVE:
            # Saved then deleted in the same transaction: the row is gone, only the DELETE matters.
            group.remove(last)
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
        transaction.on_commit(state.callback, using=using)
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
