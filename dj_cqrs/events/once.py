"""``INSERT`` a row unless its unique key exists, and say which happened: the primitive of the
inbox (once per handler and event) and of event sources (once per name and key).

One statement (``ON CONFLICT DO NOTHING``; ``INSERT IGNORE`` on MySQL/MariaDB). Inside a
transaction, a concurrent insert of the same key waits for the other transaction and then finds
the row (or inserts it, if the other one rolled back), so "inserted" is decided exactly once.
"""

from __future__ import annotations

from typing import Any

from django.db import connections


def insert_once(using: str, model: Any, values: dict[str, Any]) -> bool:
    """Insert ``values`` (field name -> Python value) into ``model``'s table; False when a row
    with the same unique key exists."""
    conn = connections[using]
    opts = model._meta
    qn = conn.ops.quote_name
    fields = [opts.get_field(name) for name in values]
    columns = ", ".join(qn(field.column) for field in fields)
    params = [field.get_db_prep_save(value, conn) for field, value in zip(fields, values.values(), strict=True)]
    marks = ", ".join(["%s"] * len(params))
    if conn.vendor == "mysql":
        sql = f"INSERT IGNORE INTO {qn(opts.db_table)} ({columns}) VALUES ({marks})"
    else:
        sql = f"INSERT INTO {qn(opts.db_table)} ({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING"
    with conn.cursor() as cursor:
        cursor.execute(sql, params)
        return bool(cursor.rowcount == 1)


__all__ = ["insert_once"]
