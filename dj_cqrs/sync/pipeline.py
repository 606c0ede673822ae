"""The two reconciliation pipelines, as stream functions (one per command).

Drift (changed, missing or extra-new rows on the replica)::

    master$ manage.py cqrs_diff_master --cqrs-id X \\
      | replica$ manage.py cqrs_diff_replica \\
      | master$ manage.py cqrs_diff_sync

Deletions (rows gone from the master but still on the replica)::

    replica$ manage.py cqrs_deleted_diff_replica --cqrs-id X \\
      | master$ manage.py cqrs_deleted_diff_master \\
      | replica$ manage.py cqrs_deleted_sync_replica

A bad line (not JSON, invalid keys) is reported through ``on_error(line_number, reason)`` and
counted; the other lines are still processed. A stream that cannot be used at all (empty, unknown
``CQRS_ID``) raises :class:`StreamError` before anything is written.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any

from django.db import DatabaseError, models

from dj_cqrs.registry import master_registry, replica_registry
from dj_cqrs.sync import diff, find_model, jsonl, resync
from dj_cqrs.sync.dump import Writer

ErrorCallback = Callable[[int, str], None]
KeysCallback = Callable[[Collection[Any]], None]


class StreamError(Exception):
    """The input stream cannot be processed (empty, or its ``CQRS_ID`` is unknown here)."""


@dataclasses.dataclass
class StreamReport:
    #: Keys read (master/replica side producers) or keys written (filters).
    keys: int = 0
    #: Rows changed by the last command of a pipeline (published or deleted).
    applied: int = 0
    failed_lines: int = 0
    sync: resync.SyncReport | None = None


def _header(lines: Iterator[tuple[int, str]], registry: Any) -> tuple[str, str, Any]:
    try:
        _, header = next(lines)
    except StopIteration:
        raise StreamError("Input stream is empty!") from None
    header = header.strip()
    cqrs_id = jsonl.header_cqrs_id(header)
    model = find_model(registry, cqrs_id)
    if model is None:
        raise StreamError(f"Wrong CQRS ID: {cqrs_id}!")
    return header, cqrs_id, model


def _batches(
    lines: Iterator[tuple[int, str]], expect: type, report: StreamReport, on_error: ErrorCallback | None
) -> Iterator[tuple[int, Any]]:
    """Decoded, non-empty lines of the expected JSON type; bad lines are reported."""
    for number, text in lines:
        if not text.strip():
            continue
        try:
            value = jsonl.decode(text)
        except ValueError as exc:
            _bad(report, on_error, number, f"not valid JSON ({exc})")
            continue
        if not isinstance(value, expect) and not (expect is list and isinstance(value, dict)):
            _bad(report, on_error, number, f"expected a JSON array, got {type(value).__name__}")
            continue
        yield number, value


def _bad(report: StreamReport, on_error: ErrorCallback | None, number: int, reason: str) -> None:
    report.failed_lines += 1
    if on_error is not None:
        on_error(number, reason)


# -- drift: master → replica → master -------------------------------------------------------------


def diff_master(model: Any, queryset: models.QuerySet[Any], out: Writer, *, batch_size: int = 10000) -> StreamReport:
    """``cqrs_diff_master``: header, then ``[[pk, revision], ...]`` per batch."""
    report = StreamReport()
    out.write(jsonl.stream_header(model.CQRS_ID) + "\n")
    for pairs in diff.master_pairs(model, queryset, batch_size):
        if pairs:
            out.write(jsonl.encode(pairs) + "\n")
            report.keys += len(pairs)
    return report


def diff_replica(
    stream: Iterable[str],
    out: Writer,
    *,
    queue: str | None,
    on_error: ErrorCallback | None = None,
    on_keys: KeysCallback | None = None,
) -> StreamReport:
    """``cqrs_diff_replica``: echo the header with ``,<queue>``, write the keys to re-sync.

    The keys of a line are written, and given to ``on_keys``, as the ``set`` django-cqrs made of
    them (its order; its ``PK to resync: {...}`` text).
    """
    report = StreamReport()
    lines = jsonl.numbered(stream)
    header, _, model = _header(lines, replica_registry)
    out.write(f"{header},{queue}\n")
    for number, pairs in _batches(lines, list, report, on_error):
        try:
            keys = diff.replica_differences(model, pairs)
        except diff.BadKey as exc:
            _bad(report, on_error, number, str(exc))
            continue
        if keys:
            resync_keys = set(keys)  # JSON scalars, all hashable
            out.write(jsonl.encode(list(resync_keys)) + "\n")
            report.keys += len(resync_keys)
            if on_keys is not None:
                on_keys(resync_keys)
    return report


def diff_sync(
    stream: Iterable[str],
    *,
    batch_size: int = 10000,
    on_error: ErrorCallback | None = None,
    on_row_error: resync.ErrorCallback | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> StreamReport:
    """``cqrs_diff_sync``: publish a SYNC for every key, to the queue named in the header."""
    report = StreamReport(sync=resync.SyncReport())
    lines = jsonl.numbered(stream)
    header, _, model = _header(lines, master_registry)
    queue = jsonl.header_queue(header)
    for number, keys in _batches(lines, list, report, on_error):
        try:
            pks = [diff.normalize_pk(model, key) for key in keys]
        except diff.BadKey as exc:
            _bad(report, on_error, number, str(exc))
            continue
        report.keys += len(pks)
        part = resync.sync_pks(
            model, pks, queue=queue, batch_size=batch_size, on_error=on_row_error, on_progress=on_progress
        )
        report.sync.add(part)  # type: ignore[union-attr]
        # keys that no longer exist on the master: nothing to sync (cqrs_deleted_* handles them)
        report.applied += part.synced
    return report


# -- deletions: replica → master → replica ---------------------------------------------------------


def deleted_diff_replica(
    model: Any, queryset: models.QuerySet[Any], out: Writer, *, batch_size: int = 10000
) -> StreamReport:
    """``cqrs_deleted_diff_replica``: header, then the replica's keys per batch."""
    report = StreamReport()
    out.write(jsonl.stream_header(model.CQRS_ID) + "\n")
    for keys in diff.replica_keys(model, queryset, batch_size):
        if keys:
            out.write(jsonl.encode(keys) + "\n")
            report.keys += len(keys)
    return report


def deleted_diff_master(
    stream: Iterable[str],
    out: Writer,
    *,
    on_error: ErrorCallback | None = None,
    on_keys: KeysCallback | None = None,
) -> StreamReport:
    """``cqrs_deleted_diff_master``: echo the header, write the keys gone from the master."""
    report = StreamReport()
    lines = jsonl.numbered(stream)
    header, _, model = _header(lines, master_registry)
    out.write(header + "\n")
    for number, keys in _batches(lines, list, report, on_error):
        try:
            gone = diff.missing_on_master(model, keys)
        except diff.BadKey as exc:
            _bad(report, on_error, number, str(exc))
            continue
        if gone:
            out.write(jsonl.encode(gone) + "\n")
            report.keys += len(gone)
            if on_keys is not None:
                on_keys(gone)
    return report


def deleted_sync_replica(stream: Iterable[str], *, on_error: ErrorCallback | None = None) -> StreamReport:
    """``cqrs_deleted_sync_replica``: delete the listed rows from the replica."""
    report = StreamReport()
    lines = jsonl.numbered(stream)
    _, _, model = _header(lines, replica_registry)
    for number, keys in _batches(lines, list, report, on_error):
        try:
            report.applied += diff.delete_on_replica(model, keys)
            report.keys += len(keys)
        except diff.BadKey as exc:
            _bad(report, on_error, number, str(exc))
        except DatabaseError as exc:
            _bad(report, on_error, number, f"database error: {exc}".strip())
    return report
