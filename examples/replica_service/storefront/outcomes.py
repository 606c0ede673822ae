"""The consumer's outcome lines as JSON lines, for ``make demo-web``.

dj_cqrs logs one line per message on the ``django-cqrs.consumer`` logger, with the message's
``cqrs_id``, ``cqrs_pk``, ``cqrs_revision``, what happened (``cqrs_outcome``: ack, retry,
dead_letter) and why (``cqrs_status``, ``cqrs_reason``) as record attributes. This handler appends
them to a file, one JSON object per line; :func:`read_new` reads what was appended since the last
call (the replica's web API keeps the latest outcome of each event).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

FIELDS = (
    "cqrs_id",
    "cqrs_pk",
    "cqrs_revision",
    "cqrs_signal",
    "cqrs_outcome",
    "cqrs_status",
    "cqrs_reason",
    "cqrs_retries",
)


class OutcomeFileHandler(logging.Handler):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line: dict[str, Any] = {name: getattr(record, name, None) for name in FIELDS}
            line["time"] = round(record.created * 1000, 1)
            line["text"] = record.getMessage()[:500]
            # One write of one line, appended: lines of several workers do not interleave.
            data = (json.dumps(line, default=str) + "\n").encode("utf-8")
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        except Exception:  # noqa: BLE001 - logging never breaks the consumer
            self.handleError(record)


def read_new(path: str, offset: int) -> tuple[list[dict[str, Any]], int]:
    """The complete lines appended to ``path`` after ``offset``, and the offset after them."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            chunk = handle.read()
    except FileNotFoundError:
        return [], offset
    end = chunk.rfind(b"\n") + 1  # a line still being written is read next time
    lines = []
    for raw in chunk[:end].splitlines():
        try:
            item = json.loads(raw)
        except ValueError:
            continue
        if isinstance(item, dict):
            lines.append(item)
    return lines, offset + end
