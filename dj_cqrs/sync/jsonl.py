"""The line formats of the dump and diff streams (the same as django-cqrs's, so pipes mix).

* Dump: first line the ``CQRS_ID``, then one JSON object per line (``instance_data`` without
  ``previous_data``).
* ``cqrs_diff_master``: ``<cqrs_id>,<now>``, then one JSON array of ``[pk, revision]`` pairs per
  batch. ``cqrs_diff_replica`` echoes the header followed by ``,<queue>`` and writes JSON arrays of
  primary keys to re-sync. ``cqrs_deleted_diff_replica``: ``<cqrs_id>,<now>``, then JSON arrays of
  primary keys; ``cqrs_deleted_diff_master`` echoes the header and the keys gone from the master.

Lines are pure ASCII (other characters are written as JSON ``\\u`` escapes, ``é`` as ``\\u00e9``),
so the bytes are the same whatever the locale of the shell a pipe runs in. Empty batches are
not written: django-cqrs's readers fail on empty lines.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import simplejson  # type: ignore[import-untyped]
from django.utils import timezone

from dj_cqrs.encoding import DECODER, to_json_value


def _default(value: Any) -> Any:
    converted = to_json_value(value)
    if converted is value:
        return str(value)
    return converted


_ENCODER = simplejson.JSONEncoder(use_decimal=True, default=_default, separators=(",", ":"), ensure_ascii=True)


def encode(obj: Any) -> str:
    """One line of JSON (without the newline)."""
    return _ENCODER.encode(obj)  # type: ignore[no-any-return]


def decode(line: str) -> Any:
    """Parse one line (as :func:`dj_cqrs.encoding.loads`: exact decimals); ``ValueError`` if not JSON."""
    return DECODER.decode(line)


def json_pk(pk: Any) -> Any:
    """A primary key as it travels in the streams: UUID/date/... as text, numbers as numbers."""
    value = to_json_value(pk)
    if value is None or isinstance(value, (str, int, float)):
        return value
    return str(value)


def stream_header(cqrs_id: str) -> str:
    """``<cqrs_id>,<now>``: the first line of ``cqrs_diff_master``/``cqrs_deleted_diff_replica``."""
    return f"{cqrs_id},{timezone.now()}"


def header_cqrs_id(line: str) -> str:
    """The ``CQRS_ID`` of a stream's first line (``<cqrs_id>[,<time>[,<queue>]]``)."""
    return line.strip().split(",", 1)[0].strip()


def header_queue(line: str) -> str | None:
    """The target queue of a ``cqrs_diff_replica`` header (its last field); ``None`` = broadcast."""
    parts = line.strip().split(",")
    if len(parts) < 3:
        return None
    queue = parts[-1].strip()
    return None if queue in ("", "None") else queue


def numbered(lines: Iterable[str], start: int = 1) -> Iterator[tuple[int, str]]:
    """``(line number, text without the line ending)``."""
    for number, line in enumerate(lines, start):
        yield number, line.rstrip("\r\n")
