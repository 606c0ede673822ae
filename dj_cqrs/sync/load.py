"""Load a dump (``cqrs_bulk_dump`` format, ours or django-cqrs's) into a replica model.

Lines are read as a stream and applied in batches through :mod:`dj_cqrs.replica.bulk` with the
consumer's non-sync revision rules: a dump row never overwrites a replica row with the same or a
newer revision. A bad line (empty, not JSON, not an object, failing the model's mapping, or
rejected by the database) is reported with its line number and reason; every good line of its
batch is still loaded (each batch commits on its own, each failing row is isolated). A database
outage (:func:`dj_cqrs.database.is_outage`: refused, restarting, connection lost) is waited out
with back-off: the batch it interrupted is loaded again once the database is back.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

from django.db import connections, router, transaction

from dj_cqrs.database import call_through_outages
from dj_cqrs.registry import replica_registry
from dj_cqrs.replica import bulk, upsert
from dj_cqrs.sync import find_model, jsonl

logger = logging.getLogger("django-cqrs.sync")

T = TypeVar("T")

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
    model = find_model(replica_registry, cqrs_id)
    if model is None:
        raise LoadError(f"Wrong CQRS ID: {cqrs_id}!")
    return cqrs_id, model


def clear_replica(model: Any) -> int:
    """Delete every row of the replica model (``--clear``); return how many."""
    if not bulk.is_db_model(model):
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
    workers: int | None = None,
) -> LoadReport:
    """Load a dump read from ``stream`` (an iterable of lines, e.g. an open file).

    ``on_error(line_number, reason)`` is called, in line order, for every line that is not
    loaded; ``on_progress(n)`` after each batch of ``n`` lines. Raises :class:`LoadError` when the
    dump cannot be used at all (before anything is written).

    ``workers``: on PostgreSQL, processes that each parse, map, convert and write whole batches
    in parallel (default: one per CPU, up to 4; 0 = everything in this process). The result does
    not depend on the order batches commit in: without ``sync`` the newest revision of a row
    always wins. With ``sync`` (last row wins) batches are always applied in order, in-process.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    lines = jsonl.numbered(stream)
    cqrs_id, model = read_header(lines, source)
    report = LoadReport(cqrs_id=cqrs_id, per_row_reason=bulk.per_row_reason(model))
    if clear:
        _through_outages(lambda: clear_replica(model), router.db_for_write(model))
    db = router.db_for_write(model) if bulk.is_db_model(model) else None
    bulk_path = report.per_row_reason is None
    if workers is None:
        workers = min(4, os.cpu_count() or 1)
    if sync or not bulk_path or db is None or connections[db].in_atomic_block or connections[db].vendor != "postgresql":
        # ordered application, a transaction that forking would break, or a database that other
        # processes cannot share (e.g. SQLite in memory) or write concurrently anyway
        workers = 0

    def finish(outcome: BatchOutcome) -> None:
        for key, number in outcome.ignored.items():
            report.ignored_fields.setdefault(key, number)
        report.loaded += outcome.loaded
        report.skipped += outcome.skipped
        report.failed += len(outcome.errors)
        if on_error is not None:
            for number, reason in outcome.errors:
                on_error(number, reason)
        if on_progress is not None:
            on_progress(outcome.lines)

    if workers < 2:
        for chunk in _chunks(lines, batch_size):
            finish(_through_outages(functools.partial(load_batch, cqrs_id, chunk, bulk_path, strategy, db, sync), db))
        return report
    with _pool(workers) as pool:
        pending: collections.deque[Any] = collections.deque()
        for chunk in _chunks(lines, batch_size):
            pending.append(pool.submit(_load_batch_in_worker, cqrs_id, chunk, strategy, db))
            if len(pending) > workers:
                finish(pending.popleft().result())
        while pending:
            finish(pending.popleft().result())
    return report


@dataclasses.dataclass
class BatchOutcome:
    """What happened to one batch of lines (small and picklable)."""

    lines: int
    loaded: int
    skipped: int
    #: ``(line number, reason)``, in line order.
    errors: list[tuple[int, str]]
    ignored: dict[str, int]


def load_batch(
    cqrs_id: str, chunk: list[tuple[int, str]], bulk_path: bool, strategy: str | None, db: str | None, sync: bool
) -> BatchOutcome:
    """Parse, validate and apply one batch of numbered lines; its own transaction."""
    model = replica_registry.get_model_by_cqrs_id(cqrs_id)
    batch = prepare_batch(cqrs_id, chunk, bulk_path, strategy, db)
    if batch.prepared is not None:
        assert db is not None
        with transaction.atomic(using=db):
            result = upsert.write(model, batch.prepared, sync=sync, using=db)
    else:
        result = _apply_rows(model, db, batch.rows, sync, strategy)
    errors = batch.errors + [(batch.numbers[f.index], f.reason) for f in result.failures]
    return BatchOutcome(batch.lines, result.loaded, result.skipped, sorted(errors), batch.ignored)


def _through_outages(work: Callable[[], T], db: str | None) -> T:
    """Run ``work`` (one batch: its own transaction), again once the database is back from an
    outage (:func:`dj_cqrs.database.is_outage`)."""
    return call_through_outages(work, what=f"cqrs_bulk_load: database {db!r}", using=db, log=logger)


def _load_batch_in_worker(cqrs_id: str, chunk: list[tuple[int, str]], strategy: str | None, db: str) -> BatchOutcome:
    try:
        return _through_outages(functools.partial(load_batch, cqrs_id, chunk, True, strategy, db, False), db)
    finally:
        connections.close_all()  # workers end with os._exit: never leave a connection dangling


@contextlib.contextmanager
def _pool(workers: int) -> Iterator[Any]:
    # Workers are forked with Django set up and open their own connections. Close this process's
    # connections first so no socket is shared (they reopen on first use).
    connections.close_all()
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"))
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _chunks(lines: Iterator[tuple[int, str]], size: int) -> Iterator[list[tuple[int, str]]]:
    chunk: list[tuple[int, str]] = []
    for item in lines:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@dataclasses.dataclass
class PreparedBatch:
    """One batch of dump lines, parsed, mapped and converted (picklable)."""

    lines: int
    #: Line numbers of ``rows`` / ``prepared`` rows, by index.
    numbers: list[int]
    errors: list[tuple[int, str]]
    ignored: dict[str, int]
    prepared: upsert.Prepared | None = None
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def prepare_batch(
    cqrs_id: str, chunk: list[tuple[int, str]], bulk_path: bool, strategy: str | None, db: str | None
) -> PreparedBatch:
    """Parse and validate a batch of lines; for set-based models also map and convert them."""
    model = replica_registry.get_model_by_cqrs_id(cqrs_id)
    batch = PreparedBatch(len(chunk), [], [], {})
    mapped: list[dict[str, Any]] = []
    for number, text in chunk:
        data = _parse(number, text, batch.errors)
        if data is None:
            continue
        for key in bulk.unknown_fields(model, data):
            batch.ignored.setdefault(key, number)
        if not bulk_path:
            batch.numbers.append(number)
            batch.rows.append(data)
            continue
        try:
            mapped.append(bulk.map_row(model, data))
        except bulk.MappingError as exc:
            batch.errors.append((number, str(exc)))
            continue
        batch.numbers.append(number)
    if bulk_path:
        batch.prepared = upsert.prepare(model, mapped, using=db, strategy=strategy)
    return batch


def _parse(number: int, text: str, errors: list[tuple[int, str]]) -> dict[str, Any] | None:
    if not text.strip():
        errors.append((number, "empty line"))
        return None
    try:
        data = jsonl.decode(text)
    except ValueError as exc:
        errors.append((number, f"not valid JSON ({exc})"))
        return None
    if not isinstance(data, dict):
        errors.append((number, f"not a JSON object (got {type(data).__name__})"))
        return None
    return data


def _apply_rows(model: Any, db: str | None, rows: list[dict[str, Any]], sync: bool, strategy: str | None) -> bulk.BulkResult:
    if not rows:
        return bulk.BulkResult()
    if db is None:
        return bulk.apply_master_rows(model, rows, sync=sync)
    with transaction.atomic(using=db):
        return bulk.apply_master_rows(model, rows, sync=sync, using=db, strategy=strategy)
