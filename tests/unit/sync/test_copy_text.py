"""COPY text encoding (pure functions; the PostgreSQL path itself runs in the PG and integration runs)."""

from __future__ import annotations

import datetime
import decimal
import uuid

import pytest

from dj_cqrs.replica import copy_text


def test_escape_only_touches_copy_specials():
    assert copy_text.escape("a\\b\tc\nd\re ☕ \"q\" /") == "a\\\\b\\tc\\nd\\re ☕ \"q\" /"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "\\N"),
        (True, "t"),
        (False, "f"),
        (42, "42"),
        (decimal.Decimal("12345678901234.123456"), "12345678901234.123456"),
        (1.5, "1.5"),
        (float("nan"), "NaN"),
        (float("-inf"), "-Infinity"),
        (datetime.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=datetime.timezone.utc), "2026-01-02T03:04:05.000006+00:00"),
        (datetime.date(2024, 1, 2), "2024-01-02"),
        (datetime.time(23, 59), "23:59:00"),
        (datetime.timedelta(days=3, microseconds=7), "3 days 0 seconds 7 microseconds"),
        (uuid.UUID(int=5), "00000000-0000-0000-0000-000000000005"),
        (b"\x00\xff", "\\\\x00ff"),
        ("tab\there", "tab\\there"),
    ],
)
def test_python_text(value, text):
    assert copy_text.python_text(value) == text


def test_unknown_types_are_unsupported():
    with pytest.raises(copy_text.Unsupported):
        copy_text.python_text(object())
