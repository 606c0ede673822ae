"""Per-object locks for replica writes (PostgreSQL advisory transaction locks).

Row locks cannot order a SAVE that creates an object with a DELETE of it that finds no row yet:
two workers could both see "no row" and commit a resurrected object. Every replica write of an
object first takes a transaction-scoped advisory lock on ``(cqrs_id, pk)``, so writes of one
object are serialized across workers and processes; different objects never wait for each other.
Other databases: SQLite has one writer at a time anyway; elsewhere this is a no-op.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import Any

from django.db import connections

from dj_cqrs.replica.pg_arrays import int_array


def _key(value: str) -> int:
    """A stable signed 32-bit hash (the two-int form of pg_advisory_xact_lock)."""
    number = zlib.crc32(value.encode("utf-8"))
    return number - (1 << 32) if number >= (1 << 31) else number


def lock_objects(model: Any, pks: Iterable[Any], using: str) -> None:
    """Lock ``(cqrs_id, pk)`` for every pk until the current transaction ends (sorted: no deadlock)."""
    conn = connections[using]
    if conn.vendor != "postgresql":
        return
    first = _key(model.CQRS_ID)
    to_python = model._meta.pk.to_python
    keys = sorted({_key(str(to_python(pk))) for pk in pks})
    if not keys:
        return
    with conn.cursor() as cursor:
        if len(keys) == 1:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [first, keys[0]])
        else:
            # the array as one text literal: PostgreSQL parses it far faster than ARRAY[k1, k2, ...]
            cursor.execute(
                "SELECT pg_advisory_xact_lock(%s, k) FROM unnest(%s::int[]) AS k ORDER BY k",
                [first, int_array(keys)],
            )
