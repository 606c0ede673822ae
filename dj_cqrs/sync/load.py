"""Load a dump (``cqrs_bulk_dump`` format, ours or django-cqrs's) into a replica model.

Lines are read as a stream and applied in batches through :mod:`dj_cqrs.replica.bulk` with the
consumer's non-sync revision rules: a dump row never overwrites a replica row with the same or a
newer revision. A bad line (empty, not JSON, not an object, failing the model's mapping, or
rejected by the database) is reported with its line number and reason; every good line of its
batch is still loaded (each batch commits on its own, each failing row is isolated).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from django.db import router, transaction

from dj_cqrs.registry import replica_registry
from dj_cqrs.replica import bulk
from dj_cqrs.sync import jsonl

#: ``on_error(line_number, reason)``
ErrorCallback = Callable[[int, str], None]


class LoadError(Exception):
    """The dump cannot be loaded at all (empty input, unknown ``CQRS_ID``...)."""


@dataclasses.dataclass
class LoadReport:
    cqrs_id: str = ""
    loaded: int = 0
    skipped: int = 0
    failed: int = 0
    #: Keys of the dump that the replica model does not store, with the first line seen.
    ignored_fields: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Why the model is loaded row by row instead of set-based (None: set-based).
    per_row_reason: str | None = None

    @property
    def lines(self) -> int:
        return self.loaded + self.skipped + self.failed


def read_header(lines: Iterator[tuple[int, str]], source: str = "-") -> tuple[str, Any]:
    """The ``CQRS_ID`` of the first line and its replica model; raise :class:`LoadError`."""
    try:
        _, first = next(lines)
    except StopIteration:
        raise LoadError(f"File {source} is empty!") from None
    cqrs_id = first.strip()
    model = replica_registry.get_model_by_cqrs_id(cqrs_id)
    if model is None:
        raise LoadError(f"Wrong CQRS ID: {cqrs_id}!")
    return cqrs_id, model


def clear_replica(model: Any) -> int:
    """Delete every row of the replica model (``--clear``); return how many."""
    if not bulk._is_db_model(model):
        raise LoadError(f"{model.__name__} has no database table (CQRS_NO_DB_OPERATIONS): cannot clear it")
    deleted, _ = model._base_manager.using(router.db_for_write(model)).all().delete()
    return int(deleted)


def load(
    stream: Iterable[str],
    *,
    batch_size: int = 10000,
    clear: bool = False,
    sync: bool = False,
    source: str = "-",
    on_error: ErrorCallback | None = None,
    on_progress: Callable[[int], None] | None = None,
    strategy: str | None = None,
) -> LoadReport:
    """Load a dump read from ``stream`` (an iterable of lines, e.g. an open file).

    ``on_error(line_number, reason)`` is called for every line that is not loaded because it is
    bad; ``on_progress(n)`` after each batch of ``n`` lines. Raises :class:`LoadError` when the
    dump cannot be used at all (before anything is written).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    lines = jsonl.numbered(stream)
    cqrs_id, model = read_header(lines, source)
    report = LoadReport(cqrs_id=cqrs_id, per_row_reason=bulk.per_row_reason(model))
    if clear:
        clear_replica(model)
    db = router.db_for_write(model) if bulk._is_db_model(model) else None

    errors: list[tuple[int, str]] = []

    def fail(number: int, reason: str) -> None:
        errors.append((number, reason))

    def flush(rows: list[dict[str, Any]], numbers: list[int], seen: int) -> None:
        _flush(model, db, rows, numbers, sync, strategy, report, fail)
        report.failed += len(errors)
        if on_error is not None:
            for number, reason in sorted(errors):
                on_error(number, reason)
        errors.clear()
        if on_progress is not None and seen:
            on_progress(seen)

    numbers: list[int] = []
    rows: list[dict[str, Any]] = []
    seen = 0
    for number, text in lines:
        seen += 1
        data = _parse(number, text, fail)
        if data is not None:
            for key in bulk.unknown_fields(model, data):
                report.ignored_fields.setdefault(key, number)
            numbers.append(number)
            rows.append(data)
        if seen >= batch_size:
            flush(rows, numbers, seen)
            rows, numbers, seen = [], [], 0
    flush(rows, numbers, seen)
    return report


def _parse(number: int, text: str, fail: ErrorCallback) -> dict[str, Any] | None:
    if not text.strip():
        fail(number, "empty line")
        return None
    try:
        data = jsonl.decode(text)
    except ValueError as exc:
        fail(number, f"not valid JSON ({exc})")
        return None
    if not isinstance(data, dict):
        fail(number, f"not a JSON object (got {type(data).__name__})")
        return None
    return data


def _flush(
    model: Any,
    db: str | None,
    rows: list[dict[str, Any]],
    numbers: list[int],
    sync: bool,
    strategy: str | None,
    report: LoadReport,
    fail: ErrorCallback,
) -> None:
    if not rows:
        return
    if db is None:
        result = bulk.apply_master_rows(model, rows, sync=sync)
    else:
        with transaction.atomic(using=db):
            result = bulk.apply_master_rows(model, rows, sync=sync, using=db, strategy=strategy)
    report.loaded += result.loaded
    report.skipped += result.skipped
    for failure in result.failures:
        fail(numbers[failure.index], failure.reason)
