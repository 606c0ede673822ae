"""What scenarios share: normalisation of results, payload capture, documented differences.

A scenario is a function ``check_<name>()`` in a module of this package. It runs inside the
differential project (``dproject``) with whichever package the interpreter has, on an empty
database, and returns plain data (dicts, lists, strings, numbers, booleans, None) describing what
a team's code would observe. The same function runs under django-cqrs 3.1.0 and under ours, and
the two results must be equal, unless the function is decorated with ``@documented("...")``,
whose argument is text that appears on the line of ``docs/upgrading.md`` naming the difference.
"""

from __future__ import annotations

import contextlib
import datetime
import decimal
import logging
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d+)?([+-]\d{2}:?\d{2}|Z)?$")


def documented(line: str) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    """Mark a scenario whose outcome differs on purpose; ``line`` is quoted from docs/upgrading.md."""

    def mark(fn: Callable[[], Any]) -> Callable[[], Any]:
        fn.documented = line  # type: ignore[attr-defined]
        return fn

    return mark


def norm(value: Any) -> Any:
    """JSON-able, comparable form: numbers as exact decimal strings, datetimes as a marker."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float, decimal.Decimal)):
        number = decimal.Decimal(str(value))
        return "num:" + format(number.normalize(), "f") if number.is_finite() else str(value)
    if isinstance(value, datetime.datetime):
        return "<datetime>"
    if isinstance(value, (datetime.date, datetime.time, uuid.UUID)):
        return str(value)
    if isinstance(value, str):
        return "<datetime>" if _DATETIME.match(value) else value
    if isinstance(value, dict):
        return {str(k): norm(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [norm(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(norm(v) for v in value)
    return f"<{type(value).__name__}: {value!r}>"


def payload_view(payload: Any) -> dict[str, Any]:
    """What a test of a team sees of a ``TransportPayload`` (volatile values normalised)."""
    return norm(
        {
            "signal_type": str(getattr(payload.signal_type, "value", payload.signal_type)),
            "cqrs_id": payload.cqrs_id,
            "pk": payload.pk,
            "instance_data": payload.instance_data,
            "previous_data": payload.previous_data,
            "queue": payload.queue,
            "meta": payload.meta,
            "correlation_id": payload.correlation_id,
            "retries": payload.retries,
        }
    )


@contextlib.contextmanager
def captured_produce() -> Iterator[list[Any]]:
    """Patch ``dj_cqrs.controller.producer.produce`` the way django-cqrs users do in their tests."""
    calls: list[Any] = []
    with mock.patch("dj_cqrs.controller.producer.produce") as produce:
        produce.side_effect = lambda payload, *a, **kw: calls.append(payload)
        yield calls


@contextlib.contextmanager
def logged(level: int = logging.WARNING) -> Iterator[list[tuple[str, str]]]:
    """``(level name, message)`` of the records logged under ``django-cqrs`` (children included)
    at ``level`` or above, whatever the project's logging configuration silences."""
    records: list[tuple[str, str]] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append((record.levelname, record.getMessage()))

    logger = logging.getLogger("django-cqrs")
    handler, old_level = Keep(level), logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def outcome(fn: Callable[[], Any]) -> dict[str, Any]:
    """Run ``fn``: its normalised return value, or the exception it raised (type and message)."""
    try:
        return {"returned": norm(fn())}
    except Exception as exc:  # noqa: BLE001 - the exception is the observation
        return {"raised": type(exc).__name__}
