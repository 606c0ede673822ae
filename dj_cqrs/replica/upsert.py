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
from collections.abc import Sequence
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connections, models, router

from dj_cqrs.replica import copy_text, tombstones
from dj_cqrs.replica.rules import tombstone_allows
from dj_cqrs.replica.statements import (
    CONVERSION_ERRORS,
    BulkResult,
    Row,
    RowFailure,
    RowWriter,
    value_error_text,
)

#: Database vendors with ``INSERT ... ON CONFLICT ... DO UPDATE ... WHERE ... RETURNING``.
UPSERT_VENDORS = frozenset({"postgresql", "sqlite"})


@dataclasses.dataclass
class Prepared:
    """Rows converted for writing (picklable, so a worker process can prepare them)."""

    rows: list[Row]
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
            Row(i, pk, rev, present, raw, text, None, upd)
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
    copy = strategy == "upsert" and connection.vendor == "postgresql" and copy_supported(connection)
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
            prepared.failures.append(RowFailure(index, value_error_text(exc)))
            continue
        raw = [row[key] if key is not None else field.get_default() for key, field in sources]
        item = Row(index, pk, revision, present, raw, updated=row.get("cqrs_updated"))
        if prepared.copy:
            try:
                item.text = "\t".join([convert(value) for convert, value in zip(converters, raw, strict=True)])
            except copy_text.Unsupported:
                prepared.copy = False  # parameterised SQL for this call
            except CONVERSION_ERRORS as exc:
                prepared.failures.append(RowFailure(index, value_error_text(exc)))
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
    latest: dict[Any, Row] = {}
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
            if stone is not None and not tombstone_allows(stone, item.revision, item.updated):
                del latest[pk]
                result.skipped += 1
    groups: dict[frozenset[str], list[Row]] = {}
    for item in latest.values():
        groups.setdefault(item.present, []).append(item)
    fields = list(model._meta.concrete_fields)
    for present, items in groups.items():
        writer = RowWriter(model, fields, present, connection, db, sync, prepared.strategy, prepared.copy)
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


def copy_supported(connection: Any) -> bool:
    module = getattr(connection.Database, "__name__", "")
    return module.startswith("psycopg")


__all__ = ["UPSERT_VENDORS", "BulkResult", "Prepared", "RowFailure", "prepare", "upsert", "write"]
