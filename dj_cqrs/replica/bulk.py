"""Apply many master rows to a replica model at once, keeping the revision rules.

This is what ``cqrs_bulk_load`` uses (and what a batched consumer can use): the rows are mapped and
validated exactly as the consumer does (``CQRS_MAPPING``, required fields, value conversion in
:mod:`dj_cqrs.replica.values`), then written with set-based statements:

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

import operator
from collections.abc import Sequence
from typing import Any

from django.db import DatabaseError, router, transaction

from dj_cqrs.core.reasons import Reason, Status
from dj_cqrs.database import is_outage
from dj_cqrs.replica import context
from dj_cqrs.replica.eligibility import is_db_model, per_row_reason
from dj_cqrs.replica.managers import ReplicaManager
from dj_cqrs.replica.upsert import UPSERT_VENDORS, BulkResult, RowFailure, upsert
from dj_cqrs.replica.values import assignable, convert_values, field_names, required_fields

_CQRS_KEYS = ("cqrs_revision", "cqrs_updated")
_STATUS_SKIPPED = frozenset({Status.IGNORED_STALE, Status.IGNORED_DUPLICATE, Status.IGNORED_BROADCAST_SYNC})
#: The manager methods behind ``_map_save_data``: a manager overriding none of them maps as
#: :func:`_map_plain` does.
_MAPPING_METHODS = (
    "_map_save_data",
    "_make_initial_mapping",
    "_remove_excessive_data",
    "_all_required_fields_are_filled",
    "_cqrs_fields_are_filled",
)
_mapping_methods = operator.attrgetter(*_MAPPING_METHODS)
_DEFAULT_MAPPING = tuple(ReplicaManager.__dict__[name] for name in _MAPPING_METHODS)


class MappingError(ValueError):
    """A master row cannot be mapped to the replica model (same checks as the consumer)."""

    def __init__(self, message: str, reason: Reason) -> None:
        super().__init__(message)
        self.reason = reason


# -- mapping --------------------------------------------------------------------------------------


def map_row(model: Any, master_data: dict[str, Any]) -> dict[str, Any]:
    """Map and convert one master row as the consumer's default ``cqrs_create``/``cqrs_update``
    would (foreign keys under their attname); raise :class:`MappingError`."""
    report = context.current()
    report.reason = None
    manager = model.cqrs
    if _is_plain(model, manager):
        fast = _map_plain(model, master_data)
        if fast is not None:
            return fast
        # something is missing: the full path below decides, logs and records the reason
    mapped = manager._map_save_data(master_data)
    if mapped is None:
        reason, report.reason = report.reason or Reason.INVALID, None
        raise MappingError(_explain(model, master_data, reason), reason)
    return assignable(model, mapped)


def _is_plain(model: Any, manager: Any) -> bool:
    """No ``CQRS_MAPPING``, no ``CQRS_CUSTOM_SERIALIZATION`` and the default mapping methods."""
    if getattr(model, "CQRS_MAPPING", None) is not None or getattr(model, "CQRS_CUSTOM_SERIALIZATION", False):
        return False
    try:
        return _mapping_methods(type(manager)) == _DEFAULT_MAPPING  # functions compare by identity
    except AttributeError:  # not a ReplicaManager at all
        return False


def _map_plain(model: Any, data: dict[str, Any]) -> dict[str, Any] | None:
    """What ``_map_save_data`` then :func:`assignable` give a plain model (see :func:`_is_plain`)
    for a complete row, with one dict built instead of three; None when the row lacks the cqrs
    fields, the key or a required field (the full path then decides)."""
    revision = data.get("cqrs_revision")
    if "cqrs_updated" not in data or not isinstance(revision, int) or isinstance(revision, bool):
        return None
    names = field_names(model)
    mapped = {k: v for k, v in data.items() if k in names}
    pk_field = model._meta.pk
    if pk_field.name not in mapped and pk_field.attname not in mapped:
        return None
    for name, attname in required_fields(model):
        if name not in mapped and attname not in mapped:
            return None
    return convert_values(model, mapped, copy=False)


def _explain(model: Any, data: dict[str, Any], reason: Reason) -> str:
    mapping = getattr(model, "CQRS_MAPPING", None)
    if reason is Reason.MISSING_CQRS_FIELDS:
        return "cqrs_revision (an integer) and cqrs_updated are required"
    if reason is Reason.BAD_MAPPING and mapping:
        missing = [k for k in mapping if k not in data]
        return f"CQRS_MAPPING key(s) missing: {', '.join(missing)}"
    if reason is Reason.MISSING_REQUIRED_FIELDS:
        present = set(data) if not mapping else {mapping[k] for k in mapping if k in data}
        missing = [
            f.name
            for f in model._meta.concrete_fields
            if not f.null and f.name not in present and f.attname not in present
        ]
        return f"required field(s) missing: {', '.join(missing)}"
    if reason is Reason.MISSING_PK:
        return f"primary key {model._meta.pk.name!r} missing"
    return str(reason)


def unknown_fields(model: Any, master_data: dict[str, Any]) -> set[str]:
    """Keys of a master row that the replica model ignores (not a field, not mapped)."""
    mapping = getattr(model, "CQRS_MAPPING", None)
    if getattr(model, "CQRS_CUSTOM_SERIALIZATION", False) or not is_db_model(model):
        return set()
    known = mapping if mapping is not None else field_names(model)
    return {k for k in master_data if k not in known and k not in _CQRS_KEYS}


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
    db_model = is_db_model(model)
    db = (using or router.db_for_write(model)) if db_model else None
    for index, data in enumerate(master_rows):
        report = context.current()
        report.clear_result()
        try:
            if db is None:
                applied = model.cqrs_save(data, sync=sync)
            else:
                applied = _save_in_savepoint(model, data, sync, db)
        except DatabaseError as exc:
            if is_outage(exc):
                raise
            result.failures.append(RowFailure(index, f"database error: {exc}".strip()))
            continue
        except Exception as exc:  # noqa: BLE001 - a user hook failing on one row must not stop the load
            result.failures.append(RowFailure(index, f"{type(exc).__name__}: {exc}"))
            continue
        if not applied:
            reason, caught = report.reason, report.exception
            text = _explain(model, data, reason) if reason else (str(caught) if caught else "cqrs_save returned a falsy value")
            result.failures.append(RowFailure(index, text))
        elif report.status in _STATUS_SKIPPED:
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


__all__ = [
    "BulkResult",
    "MappingError",
    "RowFailure",
    "UPSERT_VENDORS",
    "apply_master_rows",
    "apply_per_row",
    "is_db_model",
    "map_row",
    "per_row_reason",
    "unknown_fields",
    "upsert",
]
