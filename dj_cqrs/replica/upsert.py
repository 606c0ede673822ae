"""Set-based, revision-safe writes of mapped replica rows (the statements behind :mod:`.bulk`).

Strategies:

* ``"upsert"`` (PostgreSQL, SQLite): ``INSERT ... ON CONFLICT (pk) DO UPDATE SET <present columns>
  [WHERE table.cqrs_revision < EXCLUDED.cqrs_revision] RETURNING pk``. On PostgreSQL the rows
  first go into a temporary staging table with ``COPY ... FROM STDIN`` (see :mod:`.copy_text`),
  then one ``INSERT ... SELECT ... ON CONFLICT`` moves them; elsewhere (or for values without a
  COPY text form) they are sent as a multi-row ``VALUES`` list.
* ``"portable"`` (any database): one ``SELECT pk, cqrs_revision ... WHERE pk IN (...) FOR UPDATE``,
  a multi-row ``INSERT`` for new rows and an ``UPDATE ... WHERE pk = %s [AND cqrs_revision < %s]``
  ``executemany`` for the others.

Without ``sync`` a row never replaces a replica row with the same or a newer revision; with
``sync`` it always does (the consumer's rules). Rows of one call with the same key are reduced
to the one that applying them in order would leave. Each chunk runs in a savepoint; a chunk the
database rejects is halved until the faulty rows are isolated and reported.
"""

from __future__ import annotations

import dataclasses
import io
import uuid
from collections.abc import Sequence
from typing import Any

from django.core.exceptions import ValidationError
from django.db import DatabaseError, connections, models, router, transaction

from dj_cqrs.replica import copy_text, tombstones

#: Database vendors with ``INSERT ... ON CONFLICT ... DO UPDATE ... WHERE ... RETURNING``.
UPSERT_VENDORS = frozenset({"postgresql", "sqlite"})
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
class _Row:
    index: int
    pk: Any
    revision: int
    present: frozenset[str]
    raw: list[Any] | None
    text: str | None = None
    values: tuple[Any, ...] | None = None
    #: The row's ``cqrs_updated`` (for the tombstone rule of non-sync loads).
    updated: Any = None


@dataclasses.dataclass
class Prepared:
    """Rows converted for writing (picklable, so a worker process can prepare them)."""

    rows: list[_Row]
    failures: list[RowFailure]
    #: Every row carries its ``COPY`` text line (PostgreSQL); otherwise raw values.
    copy: bool
    strategy: str

    def __getstate__(self) -> tuple[Any, ...]:
        # columns of plain values pickle several times faster than one object per row
        rows = self.rows
        return (
            [r.index for r in rows],
            [r.pk for r in rows],
            [r.revision for r in rows],
            [r.present for r in rows],
            [r.raw for r in rows],
            [r.text for r in rows],
            [r.updated for r in rows],
            self.failures,
            self.copy,
            self.strategy,
        )

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        indexes, pks, revisions, presents, raws, texts, updated, self.failures, self.copy, self.strategy = state
        self.rows = [
            _Row(i, pk, rev, present, raw, text, None, upd)
            for i, pk, rev, present, raw, text, upd in zip(indexes, pks, revisions, presents, raws, texts, updated, strict=True)
        ]


def upsert(
    model: Any,
    rows: Sequence[dict[str, Any]],
    *,
    sync: bool = False,
    using: str | None = None,
    strategy: str | None = None,
    check_tombstones: bool = True,
) -> BulkResult:
    """Write mapped rows (as :func:`dj_cqrs.replica.bulk.map_row` returns them) to ``model``.

    ``strategy``: ``"upsert"`` or ``"portable"`` (default: the best the database supports).
    ``check_tombstones=False``: the caller already applied the tombstone rule (non-sync writes).
    Returns how many rows were written, skipped, and which failed (``index`` into ``rows``).
    """
    prepared = prepare(model, rows, using=using, strategy=strategy)
    return write(model, prepared, sync=sync, using=using, check_tombstones=check_tombstones)


def prepare(model: Any, rows: Sequence[dict[str, Any]], *, using: str | None = None, strategy: str | None = None) -> Prepared:
    """Convert mapped rows for :func:`write` (no database access)."""
    connection = connections[using or router.db_for_write(model)]
    if strategy is None:
        strategy = "upsert" if connection.vendor in UPSERT_VENDORS else "portable"
    if strategy not in ("upsert", "portable"):
        raise ValueError(f"unknown strategy {strategy!r}")
    copy = strategy == "upsert" and connection.vendor == "postgresql" and _copy_supported(connection)
    fields = list(model._meta.concrete_fields)
    pk_field = model._meta.pk
    converters = [copy_text.converter(f, connection) for f in fields] if copy else []
    plans: dict[tuple[str, ...], tuple[list[tuple[str | None, Any]], frozenset[str]]] = {}
    prepared = Prepared([], [], copy, strategy)
    for index, row in enumerate(rows):
        keys = tuple(row)
        plan = plans.get(keys)
        if plan is None:
            plan = _plan(fields, row)
            plans[keys] = plan
        sources, present = plan
        try:
            pk = pk_field.to_python(row.get(pk_field.attname, row.get(pk_field.name)))
            revision = int(row["cqrs_revision"])
        except (ValidationError, ValueError, TypeError, KeyError) as exc:
            prepared.failures.append(RowFailure(index, _value_error_text(exc)))
            continue
        raw = [row[key] if key is not None else field.get_default() for key, field in sources]
        item = _Row(index, pk, revision, present, raw, updated=row.get("cqrs_updated"))
        if prepared.copy:
            try:
                item.text = "\t".join([convert(value) for convert, value in zip(converters, raw, strict=True)])
            except copy_text.Unsupported:
                prepared.copy = False  # parameterised SQL for this call
            except _CONVERSION_ERRORS as exc:
                prepared.failures.append(RowFailure(index, _value_error_text(exc)))
                continue
        prepared.rows.append(item)
    if prepared.copy:
        for item in prepared.rows:
            item.raw = None  # the text line is all the writer needs (and less to pickle)
    else:
        binary = [i for i, f in enumerate(fields) if isinstance(f, models.BinaryField)]
        for item in prepared.rows:
            for i in binary:  # memoryview (BinaryField.to_python) cannot cross a process boundary
                if isinstance(item.raw[i], memoryview):  # type: ignore[index]
                    item.raw[i] = bytes(item.raw[i])  # type: ignore[index]
    return prepared


def write(
    model: Any, prepared: Prepared, *, sync: bool = False, using: str | None = None, check_tombstones: bool = True
) -> BulkResult:
    """Apply prepared rows: reduce same-key rows, then one statement (or COPY) per chunk."""
    db = using or router.db_for_write(model)
    connection = connections[db]
    result = BulkResult(failures=list(prepared.failures))
    latest: dict[Any, _Row] = {}
    for item in prepared.rows:
        current = latest.get(item.pk)
        if current is None:
            latest[item.pk] = item
        else:
            result.skipped += 1
            if sync or item.revision > current.revision:
                latest[item.pk] = item  # the later row (sync) or the newer revision wins
    if not sync and check_tombstones and latest:
        # Deletes stay deleted: a row of the dump older than a deletion this replica applied is
        # not written back (as the consumer ignores a late SAVE).
        stones = tombstones.find(model, list(latest))
        for pk, item in list(latest.items()):
            stone = stones.get(tombstones.pk_key(pk))
            if stone is not None and not tombstones.allows(stone, item.revision, item.updated):
                del latest[pk]
                result.skipped += 1
    groups: dict[frozenset[str], list[_Row]] = {}
    for item in latest.values():
        groups.setdefault(item.present, []).append(item)
    fields = list(model._meta.concrete_fields)
    for present, items in groups.items():
        writer = _Writer(model, fields, present, connection, db, sync, prepared.strategy, prepared.copy)
        for start in range(0, len(items), writer.chunk):
            writer.apply(items[start : start + writer.chunk], result)
    result.failures.sort(key=lambda f: f.index)
    return result


def _plan(fields: list[Any], row: dict[str, Any]) -> tuple[list[tuple[str | None, Any]], frozenset[str]]:
    """For rows with these keys: where each field's value comes from (None: its default)."""
    sources: list[tuple[str | None, Any]] = []
    for field in fields:
        key = field.attname if field.attname in row else field.name if field.name in row else None
        sources.append((key, field))
    present = frozenset(field.attname for key, field in sources if key is not None)
    return sources, present


def _value_error_text(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        return "invalid value: " + "; ".join(str(m) for m in exc.messages)
    if isinstance(exc, KeyError):
        return f"missing {exc}"
    return f"invalid value: {exc}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _connection_lost(exc: BaseException) -> bool:
    from dj_cqrs.replica.consumer import is_connection_lost

    return is_connection_lost(exc)


_CONVERSION_ERRORS = (ValidationError, ValueError, TypeError, ArithmeticError)


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

    def _values(self, items: list[_Row], result: BulkResult) -> list[_Row]:
        good: list[_Row] = []
        for item in items:
            if item.values is None:
                try:
                    item.values = tuple(
                        field.get_db_prep_save(value, connection=self.connection)
                        for field, value in zip(self.fields, item.raw or (), strict=True)
                    )
                except _CONVERSION_ERRORS as exc:
                    result.failures.append(RowFailure(item.index, _value_error_text(exc)))
                    continue
            good.append(item)
        return good

    # -- execution -------------------------------------------------------------------------------

    def apply(self, items: list[_Row], result: BulkResult) -> None:
        if self.copy:
            self._run(items, [item.text or "" for item in items], result)
        else:
            self._run(self._values(items, result), None, result)

    def _run(self, items: list[_Row], lines: list[str] | None, result: BulkResult) -> None:
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
            if _connection_lost(exc):
                raise
            if len(items) == 1:
                result.failures.append(RowFailure(items[0].index, f"database error: {_first_line(exc)}"))
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

    def _values_upsert(self, items: list[_Row]) -> int:
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

    def _copy_upsert(self, items: list[_Row], lines: list[str]) -> int:
        columns = ", ".join(self.columns)
        data = "\n".join(lines) + "\n"
        with self.connection.cursor() as cursor:
            if self._key_range_is_empty(cursor, items):
                # Nothing to conflict with (a new replica, or a new key range): straight COPY.
                # A row inserted concurrently makes COPY fail; the retry then uses the staging path.
                with self.connection.wrap_database_errors:  # driver errors -> django.db errors
                    _copy_from(cursor.cursor, f"COPY {self.table} ({columns}) FROM STDIN", data)
                return len(lines)
            stage = self.connection.ops.quote_name(f"dj_cqrs_stage_{self.model._meta.db_table}"[:63])
            cursor.execute(
                f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} (LIKE {self.table} INCLUDING DEFAULTS)"
                " ON COMMIT DELETE ROWS"
            )
            cursor.execute(f"TRUNCATE {stage}")
            with self.connection.wrap_database_errors:
                _copy_from(cursor.cursor, f"COPY {stage} ({columns}) FROM STDIN", data)
            cursor.execute(f"INSERT INTO {self.table} ({columns}) SELECT {columns} FROM {stage}" + self._on_conflict())
            return len(cursor.fetchall())

    def _key_range_is_empty(self, cursor: Any, items: list[_Row]) -> bool:
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

    def _portable(self, items: list[_Row]) -> int:
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


def _copy_supported(connection: Any) -> bool:
    module = getattr(connection.Database, "__name__", "")
    return module.startswith("psycopg")


def _copy_from(raw_cursor: Any, sql: str, data: str) -> None:
    if hasattr(raw_cursor, "copy_expert"):  # psycopg2
        raw_cursor.copy_expert(sql, io.StringIO(data))
    else:  # psycopg 3
        with raw_cursor.copy(sql) as copy:
            copy.write(data)
