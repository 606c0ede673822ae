"""JSON encoding of values and bodies (``dj_cqrs.encoding``)."""

from __future__ import annotations

import copy
import datetime
import decimal
import enum
import ipaddress
import pickle
import uuid

import pytest
from django.utils.translation import gettext_lazy

from dj_cqrs.encoding import ExactFloat, dumps, dumps_bytes, loads, restore_exact, to_json_value
from dj_cqrs.utils import get_json_valid_value


class Color(enum.Enum):
    RED = "red"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("s", "s"),
        (True, True),
        (3, 3),
        (1.5, 1.5),
        (decimal.Decimal("1.10"), decimal.Decimal("1.10")),
        (datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc), "2024-01-02 03:04:05+00:00"),
        (datetime.datetime(2024, 1, 2, 3, 4, 5, 6), "2024-01-02 03:04:05.000006"),
        (datetime.date(2024, 1, 2), "2024-01-02"),
        (datetime.time(1, 2, 3), "01:02:03"),
        (datetime.timedelta(hours=1, microseconds=5), "P0DT01H00M00.000005S"),
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        (b"\x00\x01", "AAE="),
        (bytearray(b"\x02"), "Ag=="),
        (memoryview(b"\x03"), "Aw=="),
        ([datetime.date(2024, 1, 2), (1, 2)], ["2024-01-02", [1, 2]]),
        ({1: uuid.UUID(int=2)}, {"1": "00000000-0000-0000-0000-000000000002"}),
        (frozenset({5}), [5]),
    ],
)
def test_to_json_value(value, expected):
    assert to_json_value(value) == expected
    assert get_json_valid_value(value) == expected


def test_dumps_is_compact_exact_and_utf8():
    text = dumps({"d": decimal.Decimal("0.10000000000000000000001"), "s": "é/ü", "f": 0.1})
    assert text == '{"d":0.10000000000000000000001,"s":"é/ü","f":0.1}'
    assert dumps_bytes({"s": "é"}) == '{"s":"é"}'.encode()


def test_dumps_falls_back_to_str_for_other_objects():
    assert dumps({"ip": ipaddress.ip_address("127.0.0.1"), "lazy": gettext_lazy("x"), "e": Color.RED}) == (
        '{"ip":"127.0.0.1","lazy":"x","e":"Color.RED"}'
    )
    assert dumps({"t": datetime.time(1, 2)}) == '{"t":"01:02:00"}'


def test_loads_keeps_exact_decimal_text():
    data = loads(b'{"d": 12345678901234567890.123456789, "i": 1, "e": 1e400}')
    assert isinstance(data["d"], ExactFloat)
    assert data["d"].as_decimal() == decimal.Decimal("12345678901234567890.123456789")
    assert data["i"] == 1 and isinstance(data["i"], int)
    assert restore_exact(data)["d"] == decimal.Decimal("12345678901234567890.123456789")
    assert dumps(restore_exact(data)) == '{"d":12345678901234567890.123456789,"i":1,"e":1E+400}'


def test_loads_accepts_str_bytes_and_memoryview():
    assert loads('{"a":1}') == loads(b'{"a":1}') == loads(memoryview(b'{"a":1}')) == loads(bytearray(b'{"a":1}')) == {"a": 1}


def test_loads_errors_are_value_errors():
    for bad in (b"{", b"\xff", b"[" * 50_000):
        with pytest.raises(ValueError):
            loads(bad)


def test_exact_float_behaves_like_a_float_and_survives_copies():
    value = ExactFloat("0.1000000000000000000001")
    assert value == 0.1
    assert copy.copy(value) is value and copy.deepcopy(value) is value
    restored = pickle.loads(pickle.dumps(value))
    assert restored.text == "0.1000000000000000000001"


def test_restore_exact_walks_lists_and_dicts():
    data = loads('[{"a": [1.5]}, 2.25]')
    assert restore_exact(data) == [{"a": [decimal.Decimal("1.5")]}, decimal.Decimal("2.25")]
