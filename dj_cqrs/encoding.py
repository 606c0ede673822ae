"""JSON encoding of CQRS values and bodies.

The wire is JSON as django-cqrs writes it, with these differences, all readable by a django-cqrs
peer:

* ``Decimal`` is written as a JSON *number* with its exact digits (django-cqrs goes through a float);
* ``time`` is an ISO-8601 string, ``timedelta`` an ISO-8601 duration and binary data base64 text
  (django-cqrs crashes on those);
* on the way in, a JSON number with a fraction or exponent becomes :class:`ExactFloat`, a ``float``
  that remembers its text, so a ``DecimalField`` on our replica gets the exact value.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
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


def dumps(obj: Any) -> str:
    """Serialize to compact JSON; Decimals as exact numbers."""
    return simplejson.dumps(  # type: ignore[no-any-return]
        obj, use_decimal=True, default=_default, separators=(",", ":"), ensure_ascii=False
    )


def dumps_bytes(obj: Any) -> bytes:
    return dumps(obj).encode("utf-8")


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


def loads(data: str | bytes | bytearray | memoryview) -> Any:
    """Parse JSON; numbers with a fraction or exponent become :class:`ExactFloat`."""
    if isinstance(data, memoryview):
        data = bytes(data)
    if isinstance(data, (bytes, bytearray)):
        data = data.decode("utf-8")
    try:
        return DECODER.decode(data)
    except RecursionError as exc:
        # Absurdly deep nesting: malformed input like any other, not a crash of the caller.
        raise ValueError(f"JSON nested too deeply: {exc}") from exc
