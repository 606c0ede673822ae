"""The statements that write prepared replica rows (:mod:`.upsert`), chunk by chunk.

A :class:`RowWriter` writes rows with the same present columns: ``COPY`` into the table or a
staging table then ``INSERT ... SELECT ... ON CONFLICT`` (PostgreSQL), a multi-row ``INSERT ...
ON CONFLICT`` (SQLite), or a locked ``SELECT`` + ``INSERT``/``UPDATE`` (other databases). Each
chunk runs in a savepoint; a chunk the database rejects is halved until the faulty rows are
isolated and reported as :class:`RowFailure`.
"""

from __future__ import annotations

import dataclasses
import io
import uuid
from typing import Any

from django.core.exceptions import ValidationError
from django.db import DatabaseError, transaction

from dj_cqrs.database import is_outage

#: Upper bound of parameters per ``VALUES`` statement (PostgreSQL's protocol limit is 65535).
MAX_PARAMS = 30000
#: Rows per ``COPY`` chunk.
COPY_ROWS = 10000


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
    #: Rows not applied: the replica has the same or a newer revision (non-sync), or a later row
    #: of the same call superseded them.
    skipped: int = 0
    failures: list[RowFailure] = dataclasses.field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.failures)


@dataclasses.dataclass(slots=True)
class Row:
    """One mapped row converted for writing."""


    index: int
    pk: Any
    revision: int
    present: frozenset[str]
    raw: list[Any] | None
    text: str | None = None
    values: tuple[Any, ...] | None = None
    #: The row's ``cqrs_updated`` (for the tombstone rule of non-sync loads).
    updated: Any = None


def value_error_text(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        return "invalid value: " + "; ".join(str(m) for m in exc.messages)
    if isinstance(exc, KeyError):
        return f"missing {exc}"
    return f"invalid value: {exc}"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


CONVERSION_ERRORS = (ValidationError, ValueError, TypeError, ArithmeticError)


class RowWriter:
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
        copy: bool,
    ) -> None:
        qn = connection.ops.quote_name
        self.model, self.fields, self.connection, self.db, self.sync = model, fields, connection, db, sync
        self.strategy = strategy
        self.copy = copy
        self.table = qn(model._meta.db_table)
        self.columns = [qn(f.column) for f in fields]
        self.pk_column = qn(model._meta.pk.column)
        self.pk_position = fields.index(model._meta.pk)
        self.revision_column = qn(model._meta.get_field("cqrs_revision").column)
        self.revision_position = [f.name for f in fields].index("cqrs_revision")
        self.update_positions = [i for i, f in enumerate(fields) if f.attname in present and not f.primary_key]
        per_statement = max(1, MAX_PARAMS // len(fields))
        limit = connection.features.max_query_params
        if limit:
            per_statement = max(1, min(per_statement, limit // len(fields)))
        self.chunk = COPY_ROWS if copy else per_statement

    def _values(self, items: list[Row], result: BulkResult) -> list[Row]:
        good: list[Row] = []
        for item in items:
            if item.values is None:
                try:
                    item.values = tuple(
                        field.get_db_prep_save(value, connection=self.connection)
                        for field, value in zip(self.fields, item.raw or (), strict=True)
                    )
                except CONVERSION_ERRORS as exc:
                    result.failures.append(RowFailure(item.index, value_error_text(exc)))
                    continue
            good.append(item)
        return good

    # -- execution -------------------------------------------------------------------------------

    def apply(self, items: list[Row], result: BulkResult) -> None:
        if self.copy:
            self._run(items, [item.text or "" for item in items], result)
        else:
            self._run(self._values(items, result), None, result)

    def _run(self, items: list[Row], lines: list[str] | None, result: BulkResult) -> None:
        if not items:
            return
        try:
            with transaction.atomic(using=self.db):
                if lines is not None:
                    written = self._copy_upsert(items, lines)
                elif self.strategy == "upsert":
                    written = self._values_upsert(items)
                else:
                    written = self._portable(items)
        except DatabaseError as exc:
            if is_outage(exc):
                raise
            if len(items) == 1:
                result.failures.append(RowFailure(items[0].index, f"database error: {first_line(exc)}"))
                return
            middle = len(items) // 2
            self._run(items[:middle], None if lines is None else lines[:middle], result)
            self._run(items[middle:], None if lines is None else lines[middle:], result)
            return
        result.loaded += written
        result.skipped += len(items) - written

    def _on_conflict(self) -> str:
        assignments = ", ".join(f"{self.columns[i]} = EXCLUDED.{self.columns[i]}" for i in self.update_positions)
        sql = f" ON CONFLICT ({self.pk_column}) DO UPDATE SET {assignments}"
        if not self.sync:
            sql += f" WHERE {self.table}.{self.revision_column} < EXCLUDED.{self.revision_column}"
        return sql + f" RETURNING {self.pk_column}"

    def _values_upsert(self, items: list[Row]) -> int:
        row_sql = "(" + ", ".join(["%s"] * len(self.columns)) + ")"
        sql = (
            f"INSERT INTO {self.table} ({', '.join(self.columns)}) VALUES "
            + ", ".join([row_sql] * len(items))
            + self._on_conflict()
        )
        params = [value for item in items for value in item.values or ()]
        with self.connection.cursor() as cursor:
            cursor.execute(sql, params)
            return len(cursor.fetchall())

    def _copy_upsert(self, items: list[Row], lines: list[str]) -> int:
        columns = ", ".join(self.columns)
        data = "\n".join(lines) + "\n"
        with self.connection.cursor() as cursor:
            if self._key_range_is_empty(cursor, items):
                # Nothing to conflict with (a new replica, or a new key range): straight COPY.
                # A row inserted concurrently makes COPY fail; the retry then uses the staging path.
                with self.connection.wrap_database_errors:  # driver errors -> django.db errors
                    copy_from(cursor.cursor, f"COPY {self.table} ({columns}) FROM STDIN", data)
                return len(lines)
            stage = self.connection.ops.quote_name(f"dj_cqrs_stage_{self.model._meta.db_table}"[:63])
            cursor.execute(
                f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} (LIKE {self.table} INCLUDING DEFAULTS)"
                " ON COMMIT DELETE ROWS"
            )
            cursor.execute(f"TRUNCATE {stage}")
            with self.connection.wrap_database_errors:
                copy_from(cursor.cursor, f"COPY {stage} ({columns}) FROM STDIN", data)
            cursor.execute(f"INSERT INTO {self.table} ({columns}) SELECT {columns} FROM {stage}" + self._on_conflict())
            return len(cursor.fetchall())

    def _key_range_is_empty(self, cursor: Any, items: list[Row]) -> bool:
        """True when no row exists between the smallest and largest key of ``items``.

        Only for integer and UUID keys, whose Python order is PostgreSQL's order.
        """
        keys = [item.pk for item in items]
        kind = type(keys[0])
        if kind not in (int, uuid.UUID) or any(type(key) is not kind for key in keys):
            return False
        cursor.execute(
            f"SELECT 1 FROM {self.table} WHERE {self.pk_column} >= %s AND {self.pk_column} <= %s LIMIT 1",
            [min(keys), max(keys)],
        )
        return cursor.fetchone() is None

    def _portable(self, items: list[Row]) -> int:
        manager = self.model._base_manager.using(self.db)
        existing = dict(
            manager.select_for_update().filter(pk__in=[item.pk for item in items]).values_list("pk", "cqrs_revision")
        )
        new = [item for item in items if item.pk not in existing]
        changed = [item for item in items if item.pk in existing and (self.sync or item.revision > existing[item.pk])]
        written = 0
        with self.connection.cursor() as cursor:
            if new:
                row_sql = "(" + ", ".join(["%s"] * len(self.columns)) + ")"
                cursor.execute(
                    f"INSERT INTO {self.table} ({', '.join(self.columns)}) VALUES " + ", ".join([row_sql] * len(new)),
                    [value for item in new for value in item.values or ()],
                )
                written += len(new)
            if changed:
                assignments = ", ".join(f"{self.columns[i]} = %s" for i in self.update_positions)
                sql = f"UPDATE {self.table} SET {assignments} WHERE {self.pk_column} = %s"
                if not self.sync:
                    sql += f" AND {self.revision_column} < %s"
                params = []
                for item in changed:
                    values = item.values or ()
                    row = [values[i] for i in self.update_positions] + [values[self.pk_position]]
                    if not self.sync:
                        row.append(values[self.revision_position])
                    params.append(row)
                cursor.executemany(sql, params)
                written += max(cursor.rowcount, 0)
        return written


def copy_from(raw_cursor: Any, sql: str, data: str) -> None:
    if hasattr(raw_cursor, "copy_expert"):  # psycopg2
        raw_cursor.copy_expert(sql, io.StringIO(data))
    else:  # psycopg 3
        with raw_cursor.copy(sql) as copy:
            copy.write(data)


__all__ = [
    "CONVERSION_ERRORS",
    "COPY_ROWS",
    "MAX_PARAMS",
    "BulkResult",
    "Row",
    "RowFailure",
    "RowWriter",
    "copy_from",
    "first_line",
    "value_error_text",
]
