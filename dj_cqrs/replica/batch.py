"""Batched apply: many received messages, one transaction and a few set-based statements per model.

:func:`handle_batch` is what the consumers call with the messages they received together (up to
``replica.CQRS_BATCH_SIZE``). For every model of the batch it:

1. maps and validates each message exactly as the per-message path does (``CQRS_MAPPING``,
   required fields, value conversion), without touching the database;
2. in one transaction, locks the objects (advisory locks on PostgreSQL, then ``SELECT ... FOR
   UPDATE`` of their ``cqrs_revision``/``cqrs_updated``) and reads their tombstones;
3. replays the messages in delivery order against that state with the per-message rules (revision
   guard, equal revision with a later ``cqrs_updated``, syncs that may downgrade, broadcast syncs
   of ``CQRS_ONLY_DIRECT_SYNCS`` models, tombstones, stale deletes), so several messages for one
   object end as applying them one by one would;
4. writes the result: one ``DELETE`` (through the ORM, so cascades and delete signals run), one
   upsert (``INSERT ... ON CONFLICT ... DO UPDATE`` on PostgreSQL and SQLite, a locked
   ``SELECT`` + ``INSERT``/``UPDATE`` elsewhere, see :mod:`.upsert`) and the tombstone changes.

Each message gets the :class:`~dj_cqrs.replica.consumer.Outcome` the per-message path would have
given it. When a model's transaction fails (a value the database rejects, a bug), it is rolled back
and the messages are split in halves, in order, down to single messages, which take the
per-message path: the good messages are applied and only the bad ones are retried or
dead-lettered. A database outage (:func:`dj_cqrs.database.is_outage`: connection refused or lost)
leaves the messages for redelivery (``REQUEUE``); :func:`handle_batch_through_outages` holds them
and applies them again once the database is back.

Models whose writes must run Python code per row (overridden ``cqrs_save``/``cqrs_create``/
``cqrs_update``/``cqrs_delete``/``save()``, save signals, ``CQRS_CUSTOM_SERIALIZATION``,
``CQRS_NO_DB_OPERATIONS``, ``RawReplicaMixin`` handlers ...) keep the per-message path, one
transaction per message, inside the same batch. ``replica.CQRS_BATCH_APPLY = False`` turns the
set-based path off altogether.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Callable, Sequence
from typing import Any

from django.conf import settings
from django.db import connections, models, router, transaction
from django.utils import timezone

from dj_cqrs.conf import cqrs_settings
from dj_cqrs.constants import SignalType
from dj_cqrs.core.messages import Action, InboundMessage, Outcome
from dj_cqrs.core.payload import TransportPayload
from dj_cqrs.database import Outage
from dj_cqrs.registry import replica_registry
from dj_cqrs.replica import bulk, tombstones
from dj_cqrs.replica.consumer import (
    _database_unavailable,
    apply,
    classify_failure,
    drop_if_broken,
    ignores_broadcast_sync,
    is_connection_lost,
    is_direct_sync,
    log_outcome,
    prepare,
)
from dj_cqrs.replica.locks import lock_objects
from dj_cqrs.replica.managers import (
    delete_pk,
    log_ignored_deleted,
    log_stale_delete,
    mapped_pk,
    revision_decision,
)
from dj_cqrs.replica.timeouts import apply_query_timeout
from dj_cqrs.replica.upsert import upsert

logger = logging.getLogger("django-cqrs.consumer")

Item = tuple[int, TransportPayload]


class _GroupFailed(Exception):
    """The set-based apply of a group could not complete; its transaction is rolled back."""


def handle_batch(messages: Sequence[InboundMessage], tick: Callable[[], None] | None = None) -> list[Outcome]:
    """Decide (and apply) every message of a batch; one outcome per message, in order. Never raises.

    Messages of one model are applied together; delivery order is kept between models that are
    related (a foreign key either way): the pending group of a related model is applied before a
    message of the other one is taken. Event handlers (``RawReplicaMixin``,
    ``CQRS_NO_DB_OPERATIONS``) apply everything pending first. ``tick`` is called between
    groups and between per-message applies (a transport keeps its connection alive there).
    """
    outcomes: list[Outcome | None] = [None] * len(messages)
    pending: dict[Any, list[Item]] = {}
    reasons: dict[Any, str | None] = {}
    barriers: dict[Any, Any] = {}  # model -> the pending models it must not overtake
    set_based = cqrs_settings.replica.CQRS_BATCH_APPLY

    def flush(models: Any) -> None:
        for model in [m for m in pending if m in models]:
            for index, outcome in apply_group(model, pending.pop(model), tick).items():
                outcomes[index] = outcome
            if tick is not None:
                tick()

    for index, message in enumerate(messages):
        try:
            prepared = prepare(message)
        except Exception as exc:  # noqa: BLE001 - a message never kills the worker
            logger.exception("CQRS message handling failed unexpectedly; the message is dead-lettered")
            prepared = Outcome(
                Action.DEAD_LETTER, reason="internal_error", detail=f"{type(exc).__name__}: {exc}", exception=exc
            )
        if isinstance(prepared, Outcome):
            outcomes[index] = prepared
            continue
        model = replica_registry.get_model_by_cqrs_id(prepared.cqrs_id)
        if model not in reasons:
            reasons[model] = batch_reason(model) if set_based else "CQRS_BATCH_APPLY is False"
            barriers[model] = related_models(model) if bulk._is_db_model(model) else None
        if pending:
            flush(list(pending) if barriers[model] is None else barriers[model])
        if reasons[model] is None:
            pending.setdefault(model, []).append((index, prepared))
            continue
        outcomes[index] = apply(prepared)
        if tick is not None:
            tick()
    flush(list(pending))
    final: list[Outcome] = []
    for message, maybe in zip(messages, outcomes, strict=True):
        assert maybe is not None
        final.append(log_outcome(maybe, message))
    return final


def handle_batch_through_outages(
    messages: Sequence[InboundMessage],
    wait: Callable[[float], bool] | None,
    tick: Callable[[], None] | None = None,
) -> list[Outcome]:
    """:func:`handle_batch`, holding the messages that met a database outage (``REQUEUE``) and
    applying them again, with back-off, until the database is back, however long that takes.
    The replica's :class:`~dj_cqrs.core.messages.ConsumeHandler`: what ``cqrs_consume`` workers
    pass to the transport's consume loop.

    ``wait(seconds)`` sleeps while the transport keeps its broker connection alive and returns True
    when the worker is asked to stop: the messages still waiting then keep their ``REQUEUE``
    outcome (the transport leaves them unacknowledged). No retry is counted and nothing is
    dead-lettered for an outage. One WARNING when it starts, one INFO when the database is back.
    ``wait=None`` (the in-memory transport) returns the ``REQUEUE`` outcomes at once.
    """
    outcomes = handle_batch(messages, tick)
    waiting = [i for i, outcome in enumerate(outcomes) if outcome.action is Action.REQUEUE]
    if not waiting or wait is None:
        return outcomes
    outage = Outage("Replica database", log=logger)
    while waiting:
        first = outcomes[waiting[0]]
        delay = outage.failed(first.exception or first.detail, holding=f"{len(waiting)} message(s) held unacknowledged")
        if wait(delay):
            return outcomes
        for index, outcome in zip(waiting, handle_batch([messages[i] for i in waiting], tick), strict=True):
            outcomes[index] = outcome
        waiting = [i for i in waiting if outcomes[i].action is Action.REQUEUE]
    outage.recovered()
    return outcomes


def related_models(model: Any) -> frozenset[Any]:
    """Other models ``model`` is linked to by a relation, in either direction."""
    related = set()
    for field in model._meta.get_fields(include_hidden=True):
        other = getattr(field, "related_model", None)
        if isinstance(other, type) and other is not model:
            related.add(other)
    return frozenset(related)


def batch_reason(model: Any) -> str | None:
    """Why ``model`` keeps the per-message path (None: the set-based path gives the same result)."""
    from dj_cqrs.replica.managers import ReplicaManager
    from dj_cqrs.replica.mixins import ReplicaMixin

    reason = bulk.per_row_reason(model)
    if reason is not None:
        return reason
    if bulk._overridden(model, ReplicaMixin, "cqrs_delete"):
        return "cqrs_delete is overridden"
    manager = model._meta.managers_map["cqrs"]
    if bulk._overridden(type(manager), ReplicaManager, "delete_instance"):
        return "cqrs manager delete_instance is overridden"
    for field in model._meta.get_fields(include_hidden=True):
        if getattr(field, "related_model", None) is model:
            # A delete cascades (or sets null) to rows of the same group: not in the replayed state.
            return "relation to itself"
    return None


def apply_group(model: Any, items: list[Item], tick: Callable[[], None] | None = None) -> dict[int, Outcome]:
    """Apply one model's messages set-based; split in halves on failure. Never raises."""
    db = router.db_for_write(model)
    try:
        drop_if_broken(db)
        tombstones.prune_if_due(db)
        return _Group(model, db).run(items)
    except Exception as exc:  # noqa: BLE001 - every failure is isolated or classified below
        if is_connection_lost(exc):
            return {index: _database_unavailable(payload, exc) for index, payload in items}
        if len(items) == 1:
            index, payload = items[0]
            return {index: apply(payload)}  # the per-message path classifies the failure
        logger.info(
            "CQRS batch of %s %s message(s) failed (%s: %s); splitting it",
            len(items), model.CQRS_ID, type(exc).__name__, exc,
        )
        if tick is not None:
            tick()
        middle = len(items) // 2
        return {**apply_group(model, items[:middle], tick), **apply_group(model, items[middle:], tick)}


@dataclasses.dataclass(slots=True)
class _State:
    """What the per-message path would find for one object after the messages replayed so far."""

    in_db: bool
    exists: bool
    revision: int = 0
    updated: Any = None
    #: Columns to write (None: the stored row is untouched).
    values: dict[str, Any] | None = None
    #: The stored row must be replaced by a new one (deleted, then created again in this batch).
    fresh: bool = False
    stone: Any = None
    stone_in_db: bool = False
    stone_dirty: bool = False
    #: Values of applied SAVEs that a later SAVE of this batch replaced (checked, not written).
    superseded: list[dict[str, Any]] | None = None
    #: ``cqrs_updated`` of the last applied SAVE, as received (see ``_Group._updated``).
    updated_pending: Any = None


class _Group:
    def __init__(self, model: Any, db: str) -> None:
        self.model = model
        self.db = db
        self.pk_field = model._meta.pk
        self.updated_field = model._meta.get_field("cqrs_updated")

    # -- decoding (no database access) -----------------------------------------------------------

    def _decode(self, items: list[Item], outcomes: dict[int, Outcome]) -> list[tuple[int, TransportPayload, Any, Any]]:
        """``(index, payload, pk, mapped data or None for a DELETE)``; failures go to ``outcomes``."""
        ops: list[tuple[int, TransportPayload, Any, Any]] = []
        for index, payload in items:
            signal = SignalType(payload.signal_type)
            if signal is SignalType.DELETE:
                pk, reason = delete_pk(self.model, payload.instance_data)
                if reason is not None:
                    outcomes[index] = classify_failure(payload, None, reason)
                else:
                    ops.append((index, payload, pk, None))
                continue
            if ignores_broadcast_sync(self.model, signal, payload.queue):
                outcomes[index] = Outcome(Action.ACK, payload=payload, status="ignored_broadcast_sync")
                continue
            try:
                mapped = bulk.map_row(self.model, payload.instance_data)
            except bulk.MappingError as exc:
                outcomes[index] = classify_failure(payload, None, exc.reason)
                continue
            pk = mapped_pk(self.model, mapped)  # a bad key raises: the per-message path decides
            ops.append((index, payload, pk, mapped))
        return ops

    # -- the transaction -------------------------------------------------------------------------

    def run(self, items: list[Item]) -> dict[int, Outcome]:
        outcomes: dict[int, Outcome] = {}
        ops = self._decode(items, outcomes)
        if not ops:
            return outcomes
        model, db = self.model, self.db
        pks = list(dict.fromkeys(pk for _, _, pk, _ in ops))
        with transaction.atomic(using=db):
            apply_query_timeout(model, db)
            lock_objects(model, pks, db)
            states = self._load(pks)
            for index, payload, pk, mapped in ops:
                state = states[pk]
                if mapped is None:
                    status = self._delete(state, pk, payload)
                else:
                    status = self._save(state, pk, payload, mapped)
                outcomes[index] = Outcome(Action.ACK, payload=payload, status=status)
            self._write(states)
        return outcomes

    def _load(self, pks: list[Any]) -> dict[Any, _State]:
        stored = self._stored(pks)
        self.stones_on = tombstones.ready(self.model)
        found = tombstones.find(self.model, pks) if self.stones_on else {}
        states = {}
        for pk in pks:
            row = stored.get(pk)
            stone = found.get(tombstones.pk_key(pk))
            if row is None:
                state = _State(in_db=False, exists=False)
            else:
                state = _State(in_db=True, exists=True, revision=row[0], updated=row[1])
            state.stone, state.stone_in_db = stone, stone is not None
            states[pk] = state
        return states

    def _stored(self, pks: list[Any]) -> dict[Any, tuple[int, Any]]:
        """``pk -> (cqrs_revision, cqrs_updated)`` of the stored rows, locked ``FOR UPDATE``."""
        model, connection = self.model, connections[self.db]
        manager = model._base_manager
        if connection.vendor == "postgresql" and type(manager) is models.Manager:
            # One array parameter instead of an IN list of 500 (the ORM's is much slower to build).
            qn = connection.ops.quote_name
            pk = qn(self.pk_field.column)
            columns = f"{pk}, {qn(model._meta.get_field('cqrs_revision').column)}, {qn(self.updated_field.column)}"
            values = [self.pk_field.get_db_prep_value(value, connection) for value in pks]
            with connection.cursor() as cursor:
                cursor.execute(
                    f"SELECT {columns} FROM {qn(model._meta.db_table)} WHERE {pk} = ANY(%s) FOR UPDATE", [values]
                )
                rows = cursor.fetchall()
            convert = self.pk_field.to_python
            return {convert(key): (revision, updated) for key, revision, updated in rows}
        qs = manager.using(self.db).filter(pk__in=pks)
        if connection.features.has_select_for_update or getattr(model, "CQRS_SELECT_FOR_UPDATE", False):
            qs = qs.select_for_update()
        return {key: (revision, updated) for key, revision, updated in qs.values_list("pk", "cqrs_revision", "cqrs_updated")}

    # -- the per-message rules, replayed ---------------------------------------------------------

    def _save(self, state: _State, pk: Any, payload: TransportPayload, mapped: dict[str, Any]) -> str:
        sync = SignalType(payload.signal_type) is SignalType.SYNC
        revision = mapped["cqrs_revision"]
        updated = mapped.get("cqrs_updated")
        if not state.exists:
            direct = is_direct_sync(SignalType(payload.signal_type), payload.queue)
            stone = state.stone
            if stone is not None and not direct and not tombstones.allows(stone, revision, updated):
                log_ignored_deleted(self.model, pk, revision, stone.revision)
                return "ignored_deleted"
            if stone is not None:
                state.stone, state.stone_dirty = None, True
            if state.values is not None:  # created, deleted and created again in this batch
                state.superseded = [*(state.superseded or []), state.values]
            state.exists, state.fresh, state.values = True, True, dict(mapped)
        else:
            decision = revision_decision(self.model, pk, revision, updated, state.revision, self._updated(state), sync)
            if decision != "apply":
                return decision
            if state.values is not None:
                state.superseded = [*(state.superseded or []), state.values]
                state.values = {**state.values, **mapped}
            else:
                state.values = dict(mapped)
        state.revision = revision
        state.updated, state.updated_pending = None, updated  # converted only if compared again
        return "applied"

    def _delete(self, state: _State, pk: Any, payload: TransportPayload) -> str:
        data = payload.instance_data
        revision = data.get("cqrs_revision")
        if state.exists and tombstones.delete_is_stale(
            state.revision, self._updated(state), revision, tombstones.parse_updated(data.get("cqrs_updated"))
        ):
            log_stale_delete(self.model, pk, revision, state.revision)
            return "ignored_stale_delete"
        state.exists, state.fresh, state.values = False, False, None
        if self.stones_on:
            state.stone, state.stone_dirty = tombstones.new(revision, data.get("cqrs_updated")), True
        return "applied"

    def _updated(self, state: _State) -> Any:
        if state.updated_pending is not None:
            state.updated, state.updated_pending = self._stored_updated(state.updated_pending), None
        return state.updated

    def _stored_updated(self, value: Any) -> Any:
        """``cqrs_updated`` as the database gives it back after a write."""
        parsed = self.updated_field.to_python(value)
        if isinstance(parsed, datetime.datetime) and settings.USE_TZ and timezone.is_naive(parsed):
            parsed = timezone.make_aware(parsed, timezone.get_default_timezone())
        return parsed

    # -- writing ---------------------------------------------------------------------------------

    def _check_superseded(self, states: dict[Any, _State]) -> None:
        """Values only an intermediate SAVE carried must still be valid: the per-message path
        would have failed that message (then ``_GroupFailed`` splits the batch and it does)."""
        connection = connections[self.db]
        fields = {n: f for f in self.model._meta.concrete_fields for n in (f.name, f.attname)}
        for state in states.values():
            for values in state.superseded or ():
                for key, value in values.items():
                    field = fields.get(key)
                    if field is None:
                        continue
                    try:
                        field.get_db_prep_save(value, connection=connection)
                    except Exception as exc:  # noqa: BLE001 - the per-message path decides
                        raise _GroupFailed(f"invalid {key}: {exc}") from exc

    def _write(self, states: dict[Any, _State]) -> None:
        model, db = self.model, self.db
        self._check_superseded(states)
        gone = [pk for pk, s in states.items() if s.in_db and (not s.exists or s.fresh)]
        if gone:
            model._base_manager.using(db).filter(pk__in=gone).delete()
        # Rows stored before the batch (locked) or replaced in it: written as decided. New rows:
        # never over a newer revision, in case a writer that takes no object lock (a bulk load,
        # a django-cqrs worker) inserted the key meanwhile; if one did, the group falls back to
        # the per-message path, whose create fails and retries.
        known = [s.values for s in states.values() if s.exists and s.values is not None and s.in_db]
        new = [s.values for s in states.values() if s.exists and s.values is not None and not s.in_db]
        if known:
            result = upsert(model, known, sync=True, using=db)
            if result.failures:
                raise _GroupFailed("; ".join(f.reason for f in result.failures[:3]))
        if new:
            result = upsert(model, new, sync=False, using=db, check_tombstones=False)
            if result.failures or result.loaded != len(new):
                reasons = "; ".join(f.reason for f in result.failures[:3]) or "a row with the same key appeared"
                raise _GroupFailed(reasons)
        if self.stones_on:
            cleared = [pk for pk, s in states.items() if s.stone_dirty and s.stone is None and s.stone_in_db]
            if cleared:
                tombstones.clear(model, cleared)
            recorded = {pk: s.stone for pk, s in states.items() if s.stone_dirty and s.stone is not None}
            if recorded:
                tombstones.record_many(model, recorded)


__all__ = ["apply_group", "batch_reason", "handle_batch", "handle_batch_through_outages"]
