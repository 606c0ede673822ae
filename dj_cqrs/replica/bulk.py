"""Apply many master rows to a replica model at once, keeping the revision rules.

This is what ``cqrs_bulk_load`` uses (and what a batched consumer can use): the rows are mapped and
validated exactly as the consumer does (``CQRS_MAPPING``, required fields, value conversion in
:mod:`dj_cqrs.replica.managers`), then written with set-based statements:

* PostgreSQL and SQLite: ``INSERT ... ON CONFLICT (pk) DO UPDATE SET ... WHERE
  table.cqrs_revision < EXCLUDED.cqrs_revision RETURNING pk``, one statement per chunk. Without
  ``sync`` a row never overwrites a replica row with the same or a newer revision (the consumer's
  non-sync rule: equal is a duplicate, lower is stale); with ``sync`` it always does.
* Other databases: one ``SELECT pk, cqrs_revision ... WHERE pk IN (...)``, a multi-row ``INSERT``
  for the new rows and an ``UPDATE ... WHERE pk = %s AND cqrs_revision < %s`` batch (``executemany``)
  for the others.

Each chunk runs in its own savepoint. When the database rejects a chunk (a value too long, a
constraint...), the chunk is split in halves until the rows at fault are isolated: they are
reported as failed with the database's message and every other row is still written.

Models whose writes have side effects the consumer would run, or whose data is not plain columns,
go through the per-row ``cqrs_save`` path instead (see :func:`per_row_reason`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import DatabaseError, connections, models, router, transaction
from django.db.models import signals

from dj_cqrs.replica import context
from dj_cqrs.replica.managers import ReplicaManager, assignable, field_names
from dj_cqrs.replica.upsert import UPSERT_VENDORS, BulkResult, RowFailure, upsert

_CQRS_KEYS = ("cqrs_revision", "cqrs_updated")
_STATUS_SKIPPED = frozenset({"ignored_stale", "ignored_duplicate", "ignored_broadcast_sync"})


class MappingError(ValueError):
    """A master row cannot be mapped to the replica model (same checks as the consumer)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


# -- mapping --------------------------------------------------------------------------------------


def map_row(model: Any, master_data: dict[str, Any]) -> dict[str, Any]:
    """Map and convert one master row as the consumer's default ``cqrs_create``/``cqrs_update``
    would (foreign keys under their attname); raise :class:`MappingError`."""
    holder = context.current()
    holder.pop("reason", None)
    mapped = model.cqrs._map_save_data(master_data)
    if mapped is None:
        reason = holder.pop("reason", None) or "invalid"
        raise MappingError(_explain(model, master_data, reason), reason)
    return assignable(model, mapped)


def _explain(model: Any, data: dict[str, Any], reason: str) -> str:
    mapping = getattr(model, "CQRS_MAPPING", None)
    if reason == "missing_cqrs_fields":
        return "cqrs_revision (an integer) and cqrs_updated are required"
    if reason == "bad_mapping" and mapping:
        missing = [k for k in mapping if k not in data]
        return f"CQRS_MAPPING key(s) missing: {', '.join(missing)}"
    if reason == "missing_required_fields":
        present = set(data) if not mapping else {mapping[k] for k in mapping if k in data}
        missing = [
            f.name
            for f in model._meta.concrete_fields
            if not f.null and f.name not in present and f.attname not in present
        ]
        return f"required field(s) missing: {', '.join(missing)}"
    if reason == "missing_pk":
        return f"primary key {model._meta.pk.name!r} missing"
    return reason


def unknown_fields(model: Any, master_data: dict[str, Any]) -> set[str]:
    """Keys of a master row that the replica model ignores (not a field, not mapped)."""
    mapping = getattr(model, "CQRS_MAPPING", None)
    if getattr(model, "CQRS_CUSTOM_SERIALIZATION", False) or not _is_db_model(model):
        return set()
    known = mapping if mapping is not None else field_names(model)
    return {k for k in master_data if k not in known and k not in _CQRS_KEYS}


# -- which path ----------------------------------------------------------------------------------


def _is_db_model(model: Any) -> bool:
    return isinstance(model, type) and issubclass(model, models.Model) and not getattr(
        model, "CQRS_NO_DB_OPERATIONS", False
    )


def _overridden(model: Any, base: Any, name: str) -> bool:
    mine = getattr(model, name, None)
    theirs = getattr(base, name, None)
    return getattr(mine, "__func__", mine) is not getattr(theirs, "__func__", theirs)


_SAFE_PRE_SAVE = (
    models.Field.pre_save,
    models.DateField.pre_save,
    models.DateTimeField.pre_save,
    models.TimeField.pre_save,
)


def per_row_reason(model: Any) -> str | None:
    """Why ``model`` must be applied row by row through ``cqrs_save`` (None: set-based is exact).

    Set-based writes skip ``Model.save()``, its signals and ``cqrs_create``/``cqrs_update``, so
    any model that customises them, and any field whose value is computed at save time, keeps
    the consumer's per-row path.
    """
    from dj_cqrs.replica.mixins import ReplicaMixin

    if not _is_db_model(model):
        return "CQRS_NO_DB_OPERATIONS"
    if getattr(model, "CQRS_CUSTOM_SERIALIZATION", False):
        return "CQRS_CUSTOM_SERIALIZATION"
    for name in ("cqrs_save", "cqrs_create", "cqrs_update"):
        if _overridden(model, ReplicaMixin, name):
            return f"{name} is overridden"
    if model.save is not models.Model.save:
        return "save() is overridden"
    manager = model._meta.managers_map.get("cqrs")
    if not isinstance(manager, ReplicaManager):
        return "no ReplicaManager 'cqrs'"
    for name in ("save_instance", "create_instance", "update_instance", "_map_save_data"):
        if _overridden(type(manager), ReplicaManager, name):
            return f"cqrs manager {name} is overridden"
    if model._meta.proxy or model._meta.parents:
        return "multi-table or proxy model"
    for signal in (signals.pre_save, signals.post_save):
        if signal.has_listeners(model):
            return "pre_save/post_save receivers"
    for field in model._meta.concrete_fields:
        if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
            return f"field {field.name} has auto_now/auto_now_add"
        if type(field).pre_save not in _SAFE_PRE_SAVE:
            return f"field {field.name} computes its value at save time"
        if getattr(field, "db_default", models.NOT_PROVIDED) is not models.NOT_PROVIDED:
            return f"field {field.name} has a db_default"
        if getattr(field, "generated", False) or not _plain_placeholder(model, field):
            return f"field {field.name} needs a custom SQL placeholder"
    return None


def _plain_placeholder(model: Any, field: Any) -> bool:
    if not hasattr(field, "get_placeholder"):
        return True
    connection = connections[router.db_for_write(model)]
    try:
        return bool(field.get_placeholder(b"", None, connection) == "%s")
    except Exception:  # noqa: BLE001 - a placeholder needing a compiler: not a plain one
        return False


# -- entry points ---------------------------------------------------------------------------------


def apply_master_rows(
    model: Any,
    master_rows: Sequence[dict[str, Any]],
    *,
    sync: bool = False,
    using: str | None = None,
    strategy: str | None = None,
) -> BulkResult:
    """Map, validate and apply master rows (``instance_data`` dicts) to ``model``.

    Set-based when :func:`per_row_reason` allows it, per-row ``cqrs_save`` otherwise. A row that
    fails is reported in ``failures`` with its index; it never prevents the others.
    """
    if per_row_reason(model) is not None:
        return apply_per_row(model, master_rows, sync=sync, using=using)
    result = BulkResult()
    mapped: list[dict[str, Any]] = []
    positions: list[int] = []
    for index, data in enumerate(master_rows):
        try:
            mapped.append(map_row(model, data))
        except MappingError as exc:
            result.failures.append(RowFailure(index, str(exc)))
            continue
        positions.append(index)
    written = upsert(model, mapped, sync=sync, using=using, strategy=strategy)
    result.loaded += written.loaded
    result.skipped += written.skipped
    result.failures.extend(RowFailure(positions[f.index], f.reason) for f in written.failures)
    result.failures.sort(key=lambda f: f.index)
    return result


def apply_per_row(
    model: Any, master_rows: Sequence[dict[str, Any]], *, sync: bool = False, using: str | None = None
) -> BulkResult:
    """The consumer's path, one ``cqrs_save`` per row, each in its own savepoint."""
    result = BulkResult()
    db_model = _is_db_model(model)
    db = (using or router.db_for_write(model)) if db_model else None
    for index, data in enumerate(master_rows):
        holder = context.current()
        for key in ("status", "reason", "exception"):
            holder.pop(key, None)
        try:
            if db is None:
                applied = model.cqrs_save(data, sync=sync)
            else:
                applied = _save_in_savepoint(model, data, sync, db)
        except DatabaseError as exc:
            if _connection_lost(exc):
                raise
            result.failures.append(RowFailure(index, f"database error: {exc}".strip()))
            continue
        except Exception as exc:  # noqa: BLE001 - a user hook failing on one row must not stop the load
            result.failures.append(RowFailure(index, f"{type(exc).__name__}: {exc}"))
            continue
        if not applied:
            reason = holder.get("reason")
            caught = holder.get("exception")
            text = _explain(model, data, reason) if reason else (str(caught) if caught else "cqrs_save returned a falsy value")
            result.failures.append(RowFailure(index, text))
        elif holder.get("status") in _STATUS_SKIPPED:
            result.skipped += 1
        else:
            result.loaded += 1
    return result


class _Rejected(Exception):
    pass


def _save_in_savepoint(model: Any, data: dict[str, Any], sync: bool, db: str) -> Any:
    try:
        with transaction.atomic(using=db):
            applied = model.cqrs_save(data, sync=sync)
            if not applied:
                raise _Rejected()
    except _Rejected:
        return None
    return applied


def _connection_lost(exc: BaseException) -> bool:
    from dj_cqrs.replica.consumer import is_connection_lost

    return is_connection_lost(exc)



__all__ = [
    "BulkResult",
    "MappingError",
    "RowFailure",
    "UPSERT_VENDORS",
    "apply_master_rows",
    "apply_per_row",
    "map_row",
    "per_row_reason",
    "unknown_fields",
    "upsert",
]
