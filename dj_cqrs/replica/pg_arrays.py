"""PostgreSQL array literals sent as one text parameter (``%s::int[]``).

psycopg2 adapts a Python list as ``ARRAY[v1, v2, ...]``: for the 500 keys of a batch PostgreSQL
then parses and coerces 500 constants, several times slower than reading one ``'{v1,v2,...}'``
literal. The batched apply passes its key lists this way.
"""

from __future__ import annotations

from collections.abc import Iterable


def int_array(values: Iterable[int]) -> str:
    """``{1,2,3}``: the literal of an array of ints."""
    return "{" + ",".join(map(str, values)) + "}"


def text_array(values: Iterable[str]) -> str:
    """``{"a","b\\"c"}``: the literal of an array of strings, every element quoted and escaped."""
    return (
        "{"
        + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
        + "}"
    )


__all__ = ["int_array", "text_array"]
