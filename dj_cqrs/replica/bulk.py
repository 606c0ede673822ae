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

import dataclasses
import decimal
from typing import Any, Callable, Sequence

from django.core.exceptions import ValidationError
from django.db import DatabaseError, connections, models, router, transaction
from django.db.models import signals

from dj_cqrs.replica import context
from dj_cqrs.replica.managers import ReplicaManager, field_names

#: Upper bound of parameters per statement (PostgreSQL's protocol limit is 65535).
MAX_PARAMS = 30000
#: Database vendors with ``INSERT ... ON CONFLICT ... DO UPDATE ... WHERE ... RETURNING``.
UPSERT_VENDORS = frozenset({"postgresql", "sqlite"})

_STATUS_SKIPPED = frozenset({"ignored_stale", "ignored_duplicate", "ignored_broadcast_sync"})


@dataclasses.dataclass(frozen=True)
class RowFailure:
    """Row ``index`` (position in the input sequence) was not applied, because of ``reason``."""

    index: int
    reason: str


@dataclasses.dataclass
class BulkResult:
    """What happened to a sequence of rows."""

    #: Rows inserted or updated.
    loaded: int = 0
    #: Rows not applied because the replica has the same or a newer revision (or a later row of
    #: the same batch superseded them).
    skipped: int = 0
    failures: list[RowFailure] = dataclasses.field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.failures)

    def add(self, other: BulkResult, offset: int = 0) -> None:
        self.loaded += other.loaded
        self.skipped += other.skipped
        self.failures.extend(RowFailure(f.index + offset, f.reason) for f in other.failures)


class MappingError(ValueError):
    """A master row cannot be mapped to the replica model (same checks as the consumer)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


# -- mapping --------------------------------------------------------------------------------------


def map_row(model: Any, master_data: dict[str, Any]) -> dict[str, Any]:
    """Map and convert one master row as the consumer would; raise :class:`MappingError`."""
    holder = context.current()
    holder.pop("reason", None)
    mapped = model.cqrs._map_save_data(master_data)
    if mapped is None:
        reason = holder.pop("reason", None) or "invalid"
        raise MappingError(_explain(model, master_data, reason), reason)
    return mapped  # type: ignore[no-any-return]


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
    known = set(mapping) if mapping is not None else field_names(model)
    known.update(("cqrs_revision", "cqrs_updated"))
    return {k for k in master_data if k not in known}


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
            exc = holder.get("exception")
            text = _explain(model, data, reason) if reason else (str(exc) if exc else "cqrs_save returned a falsy value")
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


# -- set-based upsert -----------------------------------------------------------------------------


@dataclasses.dataclass
class _Row:
    index: int
    pk: Any
    revision: int
    values: tuple[Any, ...]
    present: frozenset[str]


def upsert(
    model: Any,
    rows: Sequence[dict[str, Any]],
    *,
    sync: bool = False,
    using: str | None = None,
    strategy: str | None = None,
) -> BulkResult:
    """Write mapped rows (the output of :func:`map_row`) to ``model``'s table.

    ``strategy`` is ``"upsert"`` (``ON CONFLICT``; PostgreSQL, SQLite) or ``"portable"``; by
    default the best one the database supports. Returns how many rows were written, skipped as
    stale/duplicate, and which failed (``index`` into ``rows``).
    """
    result = BulkResult()
    if not rows:
        return result
    db = using or router.db_for_write(model)
    connection = connections[db]
    if strategy is None:
        strategy = "upsert" if connection.vendor in UPSERT_VENDORS else "portable"
    if strategy not in ("upsert", "portable"):
        raise ValueError(f"unknown strategy {strategy!r}")
    fields = list(model._meta.concrete_fields)
    pk_field = model._meta.pk
    prepared: dict[Any, _Row] = {}
    for index, row in enumerate(rows):
        try:
            values = tuple(_db_value(field, row, connection) for field in fields)
            pk = pk_field.to_python(row.get(pk_field.attname, row.get(pk_field.name)))
            revision = int(row["cqrs_revision"])
        except (ValidationError, ValueError, TypeError, ArithmeticError, KeyError) as exc:
            result.failures.append(RowFailure(index, _value_error_text(exc)))
            continue
        present = frozenset(f.attname for f in fields if f.attname in row or f.name in row)
        item = _Row(index, pk, revision, values, present)
        current = prepared.get(pk)
        if current is None:
            prepared[pk] = item
        elif sync or revision > current.revision:
            # the later row (sync) or the newer revision wins, as applying them in order would do
            prepared[pk] = item
            result.skipped += 1
        else:
            result.skipped += 1
    groups: dict[frozenset[str], list[_Row]] = {}
    for item in prepared.values():
        groups.setdefault(item.present, []).append(item)
    per_statement = max(1, MAX_PARAMS // max(1, len(fields)))
    if connection.features.max_query_params:
        per_statement = max(1, min(per_statement, connection.features.max_query_params // len(fields)))
    for present, items in groups.items():
        writer = _Writer(model, fields, present, connection, db, sync, strategy)
        for start in range(0, len(items), per_statement):
            writer.apply(items[start : start + per_statement], result)
    result.failures.sort(key=lambda f: f.index)
    return result


def _db_value(field: models.Field, row: dict[str, Any], connection: Any) -> Any:  # type: ignore[type-arg]
    if field.attname in row:
        value = row[field.attname]
    elif field.name in row:
        value = row[field.name]
    else:
        value = field.get_default()
    if isinstance(field, models.DecimalField) and isinstance(value, float):
        value = decimal.Decimal(repr(value))
    return field.get_db_prep_save(value, connection=connection)


def _value_error_text(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        return "invalid value: " + "; ".join(str(m) for m in exc.messages)
    if isinstance(exc, KeyError):
        return f"missing {exc}"
    return f"invalid value: {exc}"


def _connection_lost(exc: BaseException) -> bool:
    from dj_cqrs.replica.consumer import is_connection_lost

    return is_connection_lost(exc)


class _Writer:
    """Statements for one set of present columns; isolates failing rows by bisection."""

    def __init__(
        self,
        model: Any,
        fields: list[Any],
        present: frozenset[str],
        connection: Any,
        db: str,
        sync: bool,
        strategy: str,
    ) -> None:
        qn = connection.ops.quote_name
        self.connection = connection
        self.db = db
        self.sync = sync
        self.model = model
        self.table = qn(model._meta.db_table)
        self.columns = [qn(f.column) for f in fields]
        self.pk_column = qn(model._meta.pk.column)
        self.pk_position = fields.index(model._meta.pk)
        self.revision_column = qn(model._meta.get_field("cqrs_revision").column)
        self.revision_position = [f.name for f in fields].index("cqrs_revision")
        self.update_positions = [
            i for i, f in enumerate(fields) if f.attname in present and not f.primary_key
        ]
        self.row_sql = "(" + ", ".join(["%s"] * len(fields)) + ")"
        self.execute: Callable[[list[_Row]], tuple[int, int]] = (
            self._upsert if strategy == "upsert" else self._portable
        )

    def apply(self, items: list[_Row], result: BulkResult) -> None:
        try:
            with transaction.atomic(using=self.db):
                loaded, skipped = self.execute(items)
        except DatabaseError as exc:
            if _connection_lost(exc):
                raise
            if len(items) == 1:
                result.failures.append(RowFailure(items[0].index, f"database error: {_first_line(exc)}"))
                return
            middle = len(items) // 2
            self.apply(items[:middle], result)
            self.apply(items[middle:], result)
            return
        result.loaded += loaded
        result.skipped += skipped

    def _upsert(self, items: list[_Row]) -> tuple[int, int]:
        assignments = ", ".join(
            f"{self.columns[i]} = EXCLUDED.{self.columns[i]}" for i in self.update_positions
        )
        sql = (
            f"INSERT INTO {self.table} ({', '.join(self.columns)}) VALUES "
            + ", ".join([self.row_sql] * len(items))
            + f" ON CONFLICT ({self.pk_column}) DO UPDATE SET {assignments}"
        )
        if not self.sync:
            sql += f" WHERE {self.table}.{self.revision_column} < EXCLUDED.{self.revision_column}"
        sql += f" RETURNING {self.pk_column}"
        params: list[Any] = []
        for item in items:
            params.extend(item.values)
        with self.connection.cursor() as cursor:
            cursor.execute(sql, params)
            written = len(cursor.fetchall())
        return written, len(items) - written

    def _portable(self, items: list[_Row]) -> tuple[int, int]:
        manager = self.model._base_manager.using(self.db)
        existing = dict(
            manager.select_for_update()
            .filter(pk__in=[item.pk for item in items])
            .values_list("pk", "cqrs_revision")
        )
        new = [item for item in items if item.pk not in existing]
        changed = [
            item for item in items if item.pk in existing and (self.sync or item.revision > existing[item.pk])
        ]
        written = 0
        with self.connection.cursor() as cursor:
            if new:
                sql = (
                    f"INSERT INTO {self.table} ({', '.join(self.columns)}) VALUES "
                    + ", ".join([self.row_sql] * len(new))
                )
                cursor.execute(sql, [value for item in new for value in item.values])
                written += len(new)
            if changed:
                assignments = ", ".join(f"{self.columns[i]} = %s" for i in self.update_positions)
                sql = f"UPDATE {self.table} SET {assignments} WHERE {self.pk_column} = %s"
                if not self.sync:
                    sql += f" AND {self.revision_column} < %s"
                params = []
                for item in changed:
                    row = [item.values[i] for i in self.update_positions] + [item.values[self.pk_position]]
                    if not self.sync:
                        row.append(item.values[self.revision_position])
                    params.append(row)
                cursor.executemany(sql, params)
                written += max(cursor.rowcount, 0)
        return written, len(items) - written


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
