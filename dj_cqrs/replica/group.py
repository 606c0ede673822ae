"""The set-based apply of one model's messages (the batched path's core, see :mod:`.batch`).

:func:`apply_group` replays the messages of one model, in delivery order, against the state of
their objects read once (locked) from the database, with the per-message rules of
:mod:`.rules`; then it writes the result with a few set-based statements (:mod:`.upsert`) and the
tombstone changes. When the transaction fails, the messages are split in halves down to single
messages, which take the per-message path (:func:`dj_cqrs.replica.consumer.apply`).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import connections, models, router, transaction
from django.utils import timezone

from dj_cqrs.constants import SignalType
from dj_cqrs.core.messages import Action, Outcome
from dj_cqrs.core.payload import TransportPayload
from dj_cqrs.core.reasons import Reason, Status
from dj_cqrs.replica import notify, tombstones
from dj_cqrs.replica.bulk import MappingError, map_row
from dj_cqrs.replica.consumer import apply
from dj_cqrs.replica.failures import (
    classify_failure,
    database_unavailable,
    drop_if_broken,
    is_connection_lost,
)
from dj_cqrs.replica.locks import lock_objects
from dj_cqrs.replica.pg_arrays import int_array
from dj_cqrs.replica.rules import (
    delete_is_stale,
    delete_pk,
    ignores_broadcast_sync,
    is_direct_sync,
    log_ignored_deleted,
    log_stale_delete,
    mapped_pk,
    parse_updated,
    revision_decision,
    tombstone_allows,
)
from dj_cqrs.replica.timeouts import apply_query_timeout
from dj_cqrs.replica.upsert import upsert

logger = logging.getLogger("django-cqrs.consumer")

_BIGINT_MIN, _BIGINT_MAX = -(2**63), 2**63 - 1

#: A message of the group: its position in the batch and its payload.
Item = tuple[int, TransportPayload]


class _GroupFailed(Exception):
    """The set-based apply of a group could not complete; its transaction is rolled back."""


def apply_group(model: Any, items: list[Item], tick: Callable[[], None] | None = None) -> dict[int, Outcome]:
    """Apply one model's messages set-based; split in halves on failure. Never raises."""
    db = router.db_for_write(model)
    try:
        drop_if_broken(db)
        tombstones.prune_if_due(db)
        return _Group(model, db).run(items)
    except Exception as exc:  # noqa: BLE001 - every failure is isolated or classified below
        if is_connection_lost(exc):
            return {index: database_unavailable(payload, exc) for index, payload in items}
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
            signal = payload.signal_type
            if signal is SignalType.DELETE:
                pk, reason = delete_pk(self.model, payload.instance_data)
                if reason is not None:
                    outcomes[index] = classify_failure(payload, None, reason)
                else:
                    ops.append((index, payload, pk, None))
                continue
            if ignores_broadcast_sync(self.model, signal, payload.queue):
                outcomes[index] = Outcome(Action.ACK, payload=payload, status=Status.IGNORED_BROADCAST_SYNC)
                continue
            try:
                mapped = map_row(self.model, payload.instance_data)
            except MappingError as exc:
                detail = f"{exc.reason}: {exc}" if exc.reason is Reason.MISSING_REQUIRED_FIELDS else None
                outcomes[index] = classify_failure(payload, None, exc.reason, detail=detail)
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
            notify.applied(model, db)  # delivered at commit (read-your-writes)
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
            values: Any = [self.pk_field.get_db_prep_value(value, connection) for value in pks]
            array, parameter = "%s", values
            if all(type(value) is int and _BIGINT_MIN <= value <= _BIGINT_MAX for value in values):
                # integer keys as one text literal: parsed far faster than ARRAY[k1, k2, ...]; bigint
                # whatever the column (the index serves int2/int4 columns too, no range error)
                array, parameter = "%s::bigint[]", int_array(values)
            with connection.cursor() as cursor:
                cursor.execute(
                    f"SELECT {columns} FROM {qn(model._meta.db_table)} WHERE {pk} = ANY({array}) FOR UPDATE",
                    [parameter],
                )
                rows = cursor.fetchall()
            convert = self.pk_field.to_python
            return {convert(key): (revision, updated) for key, revision, updated in rows}
        qs = manager.using(self.db).filter(pk__in=pks)
        if connection.features.has_select_for_update or getattr(model, "CQRS_SELECT_FOR_UPDATE", False):
            qs = qs.select_for_update()
        return {key: (revision, updated) for key, revision, updated in qs.values_list("pk", "cqrs_revision", "cqrs_updated")}

    # -- the per-message rules, replayed ---------------------------------------------------------

    def _save(self, state: _State, pk: Any, payload: TransportPayload, mapped: dict[str, Any]) -> Status:
        signal = payload.signal_type
        sync = signal is SignalType.SYNC
        revision = mapped["cqrs_revision"]
        updated = mapped.get("cqrs_updated")
        if not state.exists:
            direct = is_direct_sync(signal, payload.queue)
            stone = state.stone
            if stone is not None and not direct and not tombstone_allows(stone, revision, updated):
                log_ignored_deleted(self.model, pk, revision, stone.revision)
                return Status.IGNORED_DELETED
            if stone is not None:
                state.stone, state.stone_dirty = None, True
            if state.values is not None:  # created, deleted and created again in this batch
                state.superseded = [*(state.superseded or []), state.values]
            state.exists, state.fresh, state.values = True, True, dict(mapped)
        else:
            decision = revision_decision(self.model, pk, revision, updated, state.revision, self._updated(state), sync)
            if decision is not Status.APPLIED:
                return decision
            if state.values is not None:
                state.superseded = [*(state.superseded or []), state.values]
                state.values = {**state.values, **mapped}
            else:
                state.values = dict(mapped)
        state.revision = revision
        state.updated, state.updated_pending = None, updated  # converted only if compared again
        return Status.APPLIED

    def _delete(self, state: _State, pk: Any, payload: TransportPayload) -> Status:
        data = payload.instance_data
        revision = data.get("cqrs_revision")
        if state.exists and delete_is_stale(
            state.revision, self._updated(state), revision, parse_updated(data.get("cqrs_updated"))
        ):
            log_stale_delete(self.model, pk, revision, state.revision)
            return Status.IGNORED_STALE_DELETE
        state.exists, state.fresh, state.values = False, False, None
        if self.stones_on:
            state.stone, state.stone_dirty = tombstones.new(revision, data.get("cqrs_updated")), True
        return Status.APPLIED

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


__all__ = ["Item", "apply_group"]
