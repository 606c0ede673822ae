"""The outbox row of a save, written by the statement that writes the object (PostgreSQL).

With the outbox on, a save costs the object's INSERT or UPDATE plus an INSERT into the outbox,
in one transaction: on an autocommit save that is BEGIN, two statements and COMMIT instead of the
one statement of a plain model. On PostgreSQL, for the duration of a save, an execute wrapper turns
Django's statement for the object's row into one statement whose data-modifying CTE also writes
the outbox row::

    WITH "dj_cqrs_changed" AS (
        <Django's INSERT or UPDATE> RETURNING ..., <pk> AS "dj_cqrs_pk", <revision> AS "dj_cqrs_revision"
    ), "dj_cqrs_event" AS (
        INSERT INTO "dj_cqrs_outbox" (...) SELECT ..., "dj_cqrs_pk"::text, "dj_cqrs_revision", ...
        FROM "dj_cqrs_changed" RETURNING "id"
    )
    SELECT "dj_cqrs_changed".*, "dj_cqrs_event"."id" FROM "dj_cqrs_changed", "dj_cqrs_event"

A single statement is atomic on its own, so the save needs no transaction of its own: an
autocommit save stays one round trip and one commit, and the event exists if and only if the
change does. The row's new revision comes back with it (no re-read). Django reads the columns it
asked for first in the same order (the extra ones are ignored; the cursor is rewound after they
were read), and for an UPDATE it counts the rows returned, which are the rows updated.

Used only where this is known to hold (:func:`plan`): PostgreSQL, a model without concrete
parents, a primary key whose text in SQL is ``str(pk)``, no meta hook or meta/correlation
function that needs the saved object, and a first save of the object in the transaction (later
saves merge into the event already recorded). Everything else takes the general path.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

from django.db import connections, models
from django.utils import timezone

from dj_cqrs import audit, encoding
from dj_cqrs.conf import cqrs_settings
from dj_cqrs.constants import SignalType
from dj_cqrs.correlation import get_correlation_id
from dj_cqrs.master import hooks, payloads, pending
from dj_cqrs.master.outbox import prepared
from dj_cqrs.master.outbox.store import enabled, outbox_model
from dj_cqrs.tracing import current_context as current_trace

#: Primary key fields whose PostgreSQL ``::text`` is ``str()`` of the Python value.
_TEXT_SAFE_PKS = (
    models.AutoField,
    models.BigAutoField,
    models.SmallAutoField,
    models.IntegerField,
    models.CharField,
    models.TextField,
    models.UUIDField,
)
_ELIGIBLE_ATTR = "_cqrs_inline_outbox"
_ACTIVE_ATTR = "_dj_cqrs_inline_save"
_CHANGED, _EVENT = '"dj_cqrs_changed"', '"dj_cqrs_event"'


def _model_eligible(model: Any) -> bool:
    """Whether saves of ``model`` may take this path (the static part checked once per class)."""
    found = model.__dict__.get(_ELIGIBLE_ATTR)
    if found is None:
        opts = model._meta
        found = not opts.parents and isinstance(opts.pk, _TEXT_SAFE_PKS)
        setattr(model, _ELIGIBLE_ATTR, found)
    # Looked up every time: a test may patch these hooks on the class.
    return bool(found) and not hooks.overridden(model, "get_cqrs_meta") and not hooks.overridden(model, "is_sync_instance")


def forget_cached(model: Any) -> None:
    if _ELIGIBLE_ATTR in model.__dict__:
        delattr(model, _ELIGIBLE_ATTR)


class _Shape:
    """The parts of the statement that depend only on the model (built once per model): for one
    row (``many=False``: the two rows are joined as they come), or for many (bulk writes: the
    outbox rows are matched to the written rows by key, in the order they were written)."""

    __slots__ = ("prefixes", "returning", "tail", "statements")

    def __init__(self, model: Any, conn: Any, many: bool = False) -> None:
        opts = model._meta
        qn = conn.ops.quote_name
        table = qn(opts.db_table)
        self.prefixes = (f"INSERT INTO {table} ", f"UPDATE {table} SET ")
        pk_col = f"{table}.{qn(opts.pk.column)}"
        rev_col = f"{table}.{qn(opts.get_field('cqrs_revision').column)}"
        self.returning = f'{pk_col} AS "dj_cqrs_pk", {rev_col} AS "dj_cqrs_revision"'
        outbox = outbox_model()._meta
        columns = ", ".join(
            qn(outbox.get_field(name).column)  # type: ignore[union-attr]
            for name in ("created_at", "cqrs_id", "signal_type", "object_pk", "revision", "data", "attempts", "last_error")
        )
        outbox_id = qn(outbox.pk.column)
        object_pk = qn(outbox.get_field("object_pk").column)  # type: ignore[union-attr]
        insert = (
            f"{_EVENT} AS (INSERT INTO {qn(outbox.db_table)} ({columns}) "
            f'SELECT %s, %s, %s, {_CHANGED}."dj_cqrs_pk"::text, {_CHANGED}."dj_cqrs_revision", %s, 0, \'\' '
            f"FROM {_CHANGED} RETURNING {outbox_id}"
        )
        if many:
            self.tail = (
                f"{insert}, {object_pk}) SELECT {_CHANGED}.*, {_EVENT}.{outbox_id} FROM {_CHANGED} "
                f'JOIN {_EVENT} ON {_EVENT}.{object_pk} = {_CHANGED}."dj_cqrs_pk"::text ORDER BY {_EVENT}.{outbox_id}'
            )
        else:
            self.tail = f"{insert}) SELECT {_CHANGED}.*, {_EVENT}.{outbox_id} FROM {_CHANGED}, {_EVENT}"
        #: ``{Django's statement: ours}`` (shapes: the sets of fields saved).
        self.statements: dict[str, str] = {}

    def statement(self, sql: str) -> str:
        found = self.statements.get(sql)
        if found is None:
            body = f"{sql}, {self.returning}" if " RETURNING " in sql else f"{sql} RETURNING {self.returning}"
            found = f"WITH {_CHANGED} AS ({body}), {self.tail}"
            if len(self.statements) < _MAX_SHAPES:
                self.statements[sql] = found
        return found


_MAX_SHAPES = 256
_shapes: dict[tuple[Any, str, bool], _Shape] = {}


def _shape(model: Any, conn: Any, many: bool = False) -> _Shape:
    key = (model, conn.alias, many)
    shape = _shapes.get(key)
    if shape is None:
        shape = _shapes[key] = _Shape(model, conn, many)
    return shape


@contextlib.contextmanager
def _installed(wrapper: Any, using: str) -> Iterator[None]:
    """Install ``wrapper`` as the active one on the connection of ``using`` while the block runs
    (a save nested in a signal receiver is the active one until it returns)."""
    conn = connections[using]
    outer = getattr(conn, _ACTIVE_ATTR, None)
    setattr(conn, _ACTIVE_ATTR, wrapper)
    try:
        with conn.execute_wrapper(wrapper):
            yield
    finally:
        setattr(conn, _ACTIVE_ATTR, outer)


class InlineSave:
    """One save whose statement also writes its outbox row (see the module docstring)."""

    __slots__ = ("instance", "using", "correlation_id", "data", "outbox_id", "revision", "_shape", "_cqrs_id")

    def __init__(self, instance: models.Model, using: str, correlation_id: str | None) -> None:
        self.instance = instance
        self.using = using
        self.correlation_id = correlation_id
        self.data = ""
        #: Filled once the statement ran: the outbox row's id and the object's new revision.
        self.outbox_id: int | None = None
        self.revision: int | None = None
        model: Any = type(instance)
        self._cqrs_id = str(model.CQRS_ID)
        self._shape = _shape(model, connections[using])

    def prepare(self, previous_data: dict[str, Any] | None) -> None:
        """The event's captured data (as the outbox stores it for a SAVE)."""
        trace = current_trace()  # the active span's W3C context (sent as headers, not in the body)
        if previous_data is None and trace is None:  # the common case, without the encoder's machinery
            correlation = "null" if self.correlation_id is None else json.dumps(self.correlation_id, ensure_ascii=False)
            self.data = f'{{"correlation_id":{correlation},"meta":{{}},"previous_data":null}}'
        else:
            data: dict[str, Any] = {"correlation_id": self.correlation_id, "meta": {}, "previous_data": previous_data}
            if trace is not None:
                data["trace"] = trace
            self.data = encoding.dumps(data, allow_nan=True)

    def installed(self) -> contextlib.AbstractContextManager[None]:
        """Rewrite the save's statement while the block runs."""
        return _installed(self, self.using)

    def __call__(self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
        conn = context["connection"]
        if (
            self.outbox_id is not None
            or many
            or not isinstance(sql, str)
            or not sql.startswith(self._shape.prefixes)
            or getattr(conn, _ACTIVE_ATTR, None) is not self
        ):
            return execute(sql, params, many, context)
        rewritten = self._shape.statement(sql)
        args = [*(params or ()), timezone.now(), self._cqrs_id, _SAVE, self.data]
        raw = context["cursor"].cursor
        statement = prepared.execute_sql(conn, raw, rewritten) if prepared.usable(conn) else None
        if statement is None:
            result = execute(rewritten, args, many, context)
        else:
            try:
                result = execute(statement, args, many, context)
            except Exception as exc:
                if not prepared.is_missing_statement(exc):
                    raise
                prepared.lost(conn)  # autocommit: the failed EXECUTE changed nothing
                result = execute(rewritten, args, many, context)
        row = raw.fetchone()
        if row is not None:  # an UPDATE of a row that is not there: Django INSERTs it next
            self.revision = int(row[-2])
            self.outbox_id = int(row[-1])
            self.instance.__dict__["cqrs_revision"] = self.revision
            raw.scroll(0, mode="absolute")
        return result


_SAVE = SignalType.SAVE.value


class InlineRows:
    """Every INSERT or UPDATE of ``model``'s table while installed also writes one outbox SAVE
    row per row it writes, with the same captured ``data`` (bulk create and bulk update, when what
    is captured does not depend on the row). :attr:`written` collects ``(pk, revision,
    outbox_id)`` in the order the rows were written."""

    def __init__(self, model: Any, using: str, data: str) -> None:
        self._shape = _shape(model, connections[using], many=True)
        self._using = using
        self._cqrs_id = str(model.CQRS_ID)
        self._data = data
        self.written: list[tuple[Any, int, int]] = []

    @contextlib.contextmanager
    def installed(self) -> Iterator[InlineRows]:
        with _installed(self, self._using):
            yield self

    def __call__(self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
        if (
            many
            or not isinstance(sql, str)
            or not sql.startswith(self._shape.prefixes)
            or getattr(context["connection"], _ACTIVE_ATTR, None) is not self
        ):
            return execute(sql, params, many, context)
        args = [*(params or ()), timezone.now(), self._cqrs_id, _SAVE, self._data]
        result = execute(self._shape.statement(sql), args, many, context)
        raw = context["cursor"].cursor
        rows = raw.fetchall()
        if rows:
            self.written.extend((row[-3], int(row[-2]), int(row[-1])) for row in rows)
            raw.scroll(0, mode="absolute")
        return result


def rows_eligible(model: Any, using: str) -> bool:
    """Whether bulk writes of ``model`` on ``using`` can write their outbox rows this way."""
    return (
        connections[using].vendor == "postgresql"
        and enabled()
        and bool(model.CQRS_PRODUCE)
        and _model_eligible(model)
        and cqrs_settings.master.meta_function is None
    )


def forget_shapes() -> None:
    """Drop the cached statements (tests that change a model's table)."""
    _shapes.clear()


def plan(instance: Any, using: str) -> InlineSave | None:
    """An :class:`InlineSave` for this save of ``instance`` when it can take that path, else None."""
    conn = connections[using]
    if conn.vendor != "postgresql" or not enabled():
        return None
    model = type(instance)
    if not model.CQRS_PRODUCE or not _model_eligible(model):
        return None
    master = cqrs_settings.master
    if master.meta_function is not None or audit.active():
        return None
    pk = instance.pk
    if instance._state.adding:
        if pk is not None and not model._meta.pk.has_default():
            return None  # the revision may continue an existing row or a deleted one
    elif pk is None:
        return None
    if pk is not None and pending.find(using, model.CQRS_ID, pk) is not None:
        return None  # merges into the event already recorded in this transaction
    if master.correlation_function is not None:
        if pk is None:
            return None
        correlation = get_correlation_id(SignalType.SAVE, model.CQRS_ID, payloads.instance_pk(pk), None)
    else:
        correlation = get_correlation_id(SignalType.SAVE, model.CQRS_ID, None, None)
    return InlineSave(instance, using, correlation)
