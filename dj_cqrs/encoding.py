"""JSON encoding of CQRS values and bodies.

The wire is JSON as django-cqrs writes it, with these differences, all readable by a django-cqrs
peer:

* ``Decimal`` is written as a JSON *number* with its exact digits (django-cqrs goes through a float);
* ``time`` is an ISO-8601 string, ``timedelta`` an ISO-8601 duration and binary data base64 text
  (django-cqrs crashes on those);
* on the way in, a JSON number with a fraction or exponent becomes :class:`ExactFloat`, a ``float``
  that remembers its text, so a ``DecimalField`` on our replica gets the exact value;
* ``NaN``, ``Infinity`` and ``-Infinity`` are read, as django-cqrs (ujson) reads and writes them
  for float values, and written (``allow_nan``) where a master publishes or records a float
  column's value and where a received body is re-encoded;
* a string holding a lone UTF-16 surrogate (``"\\ud800"``) is refused (``ValueError``): it is not
  Unicode text, so it could neither be stored (PostgreSQL) nor encoded again as UTF-8.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import re
import uuid
from typing import Any

import simplejson
from django.utils.duration import duration_iso_string


class ExactFloat(float):
    """A float parsed from JSON that keeps the literal it came from."""

    __slots__ = ("text",)

    text: str

    def __new__(cls, text: str) -> ExactFloat:
        obj = super().__new__(cls, text)
        obj.text = text
        return obj

    def as_decimal(self) -> decimal.Decimal:
        return decimal.Decimal(self.text)

    def __reduce__(self) -> tuple[Any, ...]:
        return (ExactFloat, (self.text,))

    def __deepcopy__(self, memo: dict[int, Any]) -> ExactFloat:
        return self

    def __copy__(self) -> ExactFloat:
        return self


def to_json_value(value: Any) -> Any:
    """Convert one model value to what goes into the JSON body (django-cqrs encodings)."""
    if value is None or isinstance(value, (str, bool, int, float, decimal.Decimal)):
        return value
    if isinstance(value, datetime.datetime):
        return str(value)
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return duration_iso_string(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return [to_json_value(v) for v in value]
    return value


def _default(value: Any) -> Any:
    converted = to_json_value(value)
    if converted is value:
        # Fall back to str() for anything else that has a textual form (e.g. lazy strings,
        # IP addresses, enum members): a body is never lost to a TypeError.
        return str(value)
    return converted


def dumps(obj: Any, allow_nan: bool = False) -> str:
    """Serialize to compact JSON; Decimals as exact numbers.

    ``allow_nan`` writes NaN and the infinities as ``NaN``/``Infinity``/``-Infinity`` (what
    django-cqrs writes); otherwise they raise ``ValueError``.
    """
    encoder = _ENCODERS.get(allow_nan)
    if encoder is None:  # built once (simplejson.dumps with options builds one per call)
        encoder = _ENCODERS[allow_nan] = simplejson.JSONEncoder(
            use_decimal=True, default=_default, separators=(",", ":"), ensure_ascii=False, allow_nan=allow_nan
        )
    return encoder.encode(obj)  # type: ignore[no-any-return]


_ENCODERS: dict[bool, simplejson.JSONEncoder] = {}


def dumps_bytes(obj: Any, allow_nan: bool = False) -> bytes:
    return dumps(obj, allow_nan=allow_nan).encode("utf-8")


def restore_exact(obj: Any) -> Any:
    """Copy of decoded JSON with :class:`ExactFloat` turned back into exact ``Decimal`` values,
    so that re-encoding a received body (e.g. for a retry) keeps every digit."""
    if isinstance(obj, ExactFloat):
        return obj.as_decimal()
    if isinstance(obj, dict):
        return {k: restore_exact(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [restore_exact(v) for v in obj]
    return obj


#: The one decoder (the standard library's C scanner): numbers with a fraction or exponent become
#: :class:`ExactFloat`. Built once; ``json.loads(..., parse_float=)`` would build one per call.
DECODER = json.JSONDecoder(parse_float=ExactFloat)


#: An escaped UTF-16 surrogate (``\\ud800``-``\\udfff``): only a text holding one, or a raw one, can
#: decode to a string with a lone surrogate (escaped pairs decode to one character).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def loads(data: str | bytes | bytearray | memoryview) -> Any:
    """Parse JSON; numbers with a fraction or exponent become :class:`ExactFloat`.

    ``ValueError`` for text that is not JSON, and for a string (key or value) holding a lone
    UTF-16 surrogate, which is not Unicode text.
    """
    if isinstance(data, memoryview):
        data = bytes(data)
    suspect: bool
    if isinstance(data, (bytes, bytearray)):
        data = data.decode("utf-8")  # strict: raw surrogates are not UTF-8, only escapes remain
        suspect = _SURROGATE_ESCAPE.search(data) is not None
    else:
        suspect = _SURROGATE_ESCAPE.search(data) is not None or (
            not data.isascii() and _SURROGATE.search(data) is not None
        )
    try:
        value = DECODER.decode(data)
    except RecursionError as exc:
        # Absurdly deep nesting: malformed input like any other, not a crash of the caller.
        raise ValueError(f"JSON nested too deeply: {exc}") from exc
    if suspect:
        lone = lone_surrogate(value)
        if lone is not None:
            raise ValueError(f"a string holds a lone UTF-16 surrogate, which is not Unicode text: {ascii(lone)[:80]}")
    return value


def lone_surrogate(value: Any) -> str | None:
    """The first string (key or value) of decoded JSON that holds a lone surrogate, or None."""
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item) is not None:
                return item
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None
