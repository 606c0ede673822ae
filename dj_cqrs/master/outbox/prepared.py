"""Server-side prepared statements for the saves' outbox statements (PostgreSQL, autocommit).

PostgreSQL parses and plans the statement of :mod:`dj_cqrs.master.outbox.inline` (a CTE that
writes two tables) in about as much time as it executes it. Prepared once per connection and
statement shape (``PREPARE``), it is then run with ``EXECUTE``, which costs the server about what
the plain INSERT or UPDATE of the same model costs.

Only autocommit saves use it, so a statement that cannot be prepared or executed never breaks a
transaction: ``PREPARE`` fails harmlessly (the shape is remembered as not preparable, e.g. a
parameter whose type PostgreSQL cannot infer), and an ``EXECUTE`` that finds no such statement
(a connection pooler in transaction mode, such as PgBouncer, hands each statement to any server
connection; ``DISCARD ALL``) falls back to the plain statement and turns prepared statements off
for this process, with one WARNING. ``CQRS['master']['prepared_statements'] = False`` turns them
off from the start (recommended behind PgBouncer in transaction or statement mode).
"""

from __future__ import annotations

import itertools
import logging
import re
from typing import Any

from dj_cqrs.conf import cqrs_settings

logger = logging.getLogger("django-cqrs.outbox")

#: Statements a connection keeps prepared at most (shapes: models x sets of saved fields).
MAX_PER_CONNECTION = 256
#: SQLSTATE of "prepared statement does not exist".
UNDEFINED_PREPARED = "26000"

_STATE_ATTR = "_dj_cqrs_prepared"
_PLACEHOLDER = re.compile(r"%([s%])")
_names = itertools.count(1)
_unpreparable: set[str] = set()
_disabled = False


class _Prepared:
    """What one raw database connection has prepared: ``{statement: name}``."""

    __slots__ = ("raw", "names")

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.names: dict[str, tuple[str, int]] = {}


def usable(conn: Any) -> bool:
    """Whether this save may run a prepared statement on ``conn``."""
    if _disabled or conn.in_atomic_block or not cqrs_settings.master.prepared_statements:
        return False
    # psycopg 3 with server-side binding sends typed parameters: EXECUTE's arguments would need
    # casts; the plain statement is used there.
    return not conn.settings_dict.get("OPTIONS", {}).get("server_side_binding")


def _state(conn: Any) -> _Prepared:
    raw = conn.connection
    state: _Prepared | None = getattr(conn, _STATE_ATTR, None)
    if state is None or state.raw is not raw:  # a new database session: nothing is prepared
        state = _Prepared(raw)
        setattr(conn, _STATE_ATTR, state)
    return state


def _numbered(sql: str) -> tuple[str, int]:
    """``sql`` with ``%s`` as ``$1, $2 ...`` and ``%%`` as ``%``; and the number of parameters."""
    count = 0

    def replace(match: re.Match[str]) -> str:
        nonlocal count
        if match.group(1) == "%":
            return "%"
        count += 1
        return f"${count}"

    return _PLACEHOLDER.sub(replace, sql), count


def execute_sql(conn: Any, raw_cursor: Any, sql: str) -> str | None:
    """The ``EXECUTE`` statement that runs ``sql`` (prepared now if needed), or None to run
    ``sql`` itself."""
    if sql in _unpreparable:
        return None
    state = _state(conn)
    known = state.names.get(sql)
    if known is None:
        if len(state.names) >= MAX_PER_CONNECTION:
            return None
        numbered, count = _numbered(sql)
        name = f"dj_cqrs_{next(_names)}"
        try:
            raw_cursor.execute(f"PREPARE {name} AS {numbered}")
        except Exception as exc:  # noqa: BLE001 - autocommit: nothing to roll back
            logger.debug("CQRS outbox statement not prepared (%r); it runs unprepared", exc)
            _unpreparable.add(sql)
            return None
        state.names[sql] = (name, count)
    else:
        name, count = known
    return f"EXECUTE {name}({', '.join(['%s'] * count)})" if count else f"EXECUTE {name}"


def is_missing_statement(exc: BaseException) -> bool:
    """``exc`` (or its cause) is PostgreSQL's "prepared statement does not exist"."""
    for error in (exc, exc.__cause__):
        code = getattr(error, "pgcode", None) or getattr(error, "sqlstate", None)
        if code == UNDEFINED_PREPARED:
            return True
    return False


def lost(conn: Any) -> None:
    """The connection's prepared statements are gone: forget them and stop using any."""
    global _disabled
    if hasattr(conn, _STATE_ATTR):
        delattr(conn, _STATE_ATTR)
    if not _disabled:
        _disabled = True
        logger.warning(
            "CQRS: a prepared outbox statement disappeared from its database session (a connection"
            " pooler in transaction mode, or DISCARD ALL); saves no longer use prepared statements"
            " in this process. Set CQRS['master']['prepared_statements'] = False to skip them."
        )


def reset() -> None:
    """Forget what was learnt (tests)."""
    global _disabled
    _disabled = False
    _unpreparable.clear()
