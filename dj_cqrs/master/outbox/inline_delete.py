"""The outbox row of a delete, written by the DELETE statement itself (PostgreSQL, autocommit).

With the outbox on, ``delete()`` of a master model costs BEGIN, a read of the stored revision, the
DELETE, the outbox INSERT and COMMIT; a plain model's autocommit delete is one statement. When the
delete removes this one object and nothing else, and no receiver but dj_cqrs's is connected to
``pre_delete``/``post_delete`` for the model, ``RawMasterMixin.delete`` runs Django's collector as
usual, then, instead of the collector's transaction, one statement::

    WITH "dj_cqrs_deleted" AS (
        DELETE FROM <table> WHERE <pk> = %s RETURNING <cqrs_revision> AS "dj_cqrs_revision"
    )
    INSERT INTO "dj_cqrs_outbox" (...)
    SELECT ..., "dj_cqrs_revision" + 1, replace(<data>, <placeholder>, ("dj_cqrs_revision" + 1)::text), ...
    FROM "dj_cqrs_deleted" RETURNING id, revision

A single statement is atomic on its own: the event exists if and only if the row was deleted, and
the DELETE carries the stored revision + 1 read by the statement that deletes the row. The
event's ``instance_data`` (and the captured data around it) is JSON built in Python before the
statement, exactly as the general path builds it, with a placeholder where the revision goes;
PostgreSQL puts the number in its place, so the stored text keeps its key order and format. The
signals are sent as Django sends them (``pre_delete`` before the statement, ``post_delete`` after
it); ``on_post_delete`` finds the recorded event and records it without another row.

Everything else takes the general path (:func:`plan` returns None): other databases, a
transaction, the triggers, a custom ``get_cqrs_meta``/``is_sync_instance`` or
``master.meta_function``, concrete parents or proxies, other signal receivers (their work belongs
in the delete's transaction), and a collector that found anything more to delete or update.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import connections, models
from django.db.models import signals
from django.utils import timezone

from dj_cqrs import audit, encoding
from dj_cqrs.conf import cqrs_settings
from dj_cqrs.constants import SignalType
from dj_cqrs.correlation import get_correlation_id
from dj_cqrs.master import hooks, payloads, pending, triggers
from dj_cqrs.master.outbox import prepared
from dj_cqrs.master.outbox.store import enabled, outbox_model

#: Set on the instance while ``post_delete`` is sent for a delete that took this path.
ACTIVE_ATTR = "_dj_cqrs_inline_delete"
#: Where the revision goes in the captured data until PostgreSQL writes the number there.
_PLACEHOLDER = "dj_cqrs:inline-delete:revision:5b0f3c1e"
_QUOTED_PLACEHOLDER = f'"{_PLACEHOLDER}"'
_DELETED = '"dj_cqrs_deleted"'
_DELETE = SignalType.DELETE.value
_ELIGIBLE_ATTR = "_cqrs_inline_delete"

_statements: dict[tuple[Any, str], str] = {}


def _model_eligible(model: Any) -> bool:
    found = model.__dict__.get(_ELIGIBLE_ATTR)
    if found is None:
        opts = model._meta
        found = not opts.parents and not opts.proxy
        setattr(model, _ELIGIBLE_ATTR, found)
    # Looked up every time: a test may patch these on the class.
    return (
        bool(found)
        and not triggers.wanted(model)
        and not hooks.overridden(model, "get_cqrs_meta")
        and not hooks.overridden(model, "is_sync_instance")
    )


def _live_receivers(signal: Any, sender: Any) -> list[Any] | None:
    """The receivers ``signal`` would call for ``sender`` (None when Django's answer has an
    unknown shape: the general path is taken)."""
    try:
        live = signal._live_receivers(sender)
    except Exception:  # noqa: BLE001 - a private API: its absence only costs the fast path
        return None
    if isinstance(live, tuple):  # Django >= 5.0: (sync receivers, async receivers)
        return [receiver for group in live for receiver in group]
    return list(live) if isinstance(live, list) else None


def _only_receiver(model: Any, ours: Callable[..., Any]) -> bool:
    """No ``pre_delete`` receiver, and ``ours`` is the only ``post_delete`` receiver of ``model``."""
    if signals.pre_delete.has_listeners(model):
        return False
    return _live_receivers(signals.post_delete, model) == [ours]


def _statement(model: Any, conn: Any) -> str:
    key = (model, conn.alias)
    found = _statements.get(key)
    if found is None:
        qn = conn.ops.quote_name
        opts = model._meta
        table = qn(opts.db_table)
        outbox = outbox_model()._meta
        columns = ", ".join(
            qn(outbox.get_field(name).column)  # type: ignore[union-attr]
            for name in (
                "created_at",
                "cqrs_id",
                "signal_type",
                "object_pk",
                "revision",
                "data",
                "attempts",
                "last_error",
            )
        )
        revision = f'{_DELETED}."dj_cqrs_revision" + 1'
        found = (
            f"WITH {_DELETED} AS (DELETE FROM {table} WHERE {table}.{qn(opts.pk.column)} = %s "
            f'RETURNING {table}.{qn(opts.get_field("cqrs_revision").column)} AS "dj_cqrs_revision") '
            f"INSERT INTO {qn(outbox.db_table)} ({columns}) "
            f"SELECT %s, %s, %s, %s, {revision}, replace(%s, %s, ({revision})::text), 0, '' FROM {_DELETED} "
            f"RETURNING {qn(outbox.pk.column)}, {qn(outbox.get_field('revision').column)}"  # type: ignore[union-attr]
        )
        _statements[key] = found
    return found


class InlineDelete:
    """One autocommit delete whose statement also writes its outbox row (see the module docstring)."""

    __slots__ = (
        "instance",
        "model",
        "using",
        "correlation_id",
        "instance_data",
        "outbox_id",
        "revision",
    )

    def __init__(self, instance: models.Model, using: str) -> None:
        self.instance: Any = instance
        self.model: Any = type(instance)
        self.using = using
        self.correlation_id: str | None = None
        self.instance_data: dict[str, Any] = {}
        #: Filled once the statement deleted the row: the outbox row's id and the DELETE's revision.
        self.outbox_id: int | None = None
        self.revision: int | None = None

    def run(self, collector: Any) -> tuple[int, dict[str, int]] | None:
        """Delete the object with the collector's signals and return what ``Model.delete``
        returns, or None (nothing done) when the collector found more than this object."""
        instance, model = self.instance, self.model
        if (
            collector.fast_deletes
            or collector.field_updates
            or len(collector.data) != 1
            or len(collector.data.get(model, ())) != 1
            or next(iter(collector.data[model])) is not instance
        ):
            return None
        pk = instance.pk
        cqrs_id = str(model.CQRS_ID)
        self.correlation_id = get_correlation_id(
            SignalType.DELETE, cqrs_id, payloads.instance_pk(pk), None
        )
        self.instance_data = payloads.delete_instance_data(instance, 0)
        captured = encoding.dumps(
            {
                "correlation_id": self.correlation_id,
                "meta": {},
                "instance_data": {**self.instance_data, "cqrs_revision": _PLACEHOLDER},
            },
            allow_nan=True,
        )
        if captured.count(_QUOTED_PLACEHOLDER) != 1:  # the custom data holds the placeholder
            return None
        using, origin = self.using, collector.origin
        signals.pre_delete.send(sender=model, instance=instance, using=using, origin=origin)
        conn = connections[using]
        args = [
            model._meta.pk.get_db_prep_value(pk, conn),
            timezone.now(),
            cqrs_id,
            _DELETE,
            str(pk),
            captured,
            _QUOTED_PLACEHOLDER,
        ]
        row = self._execute(conn, _statement(model, conn), args)
        if row is not None:
            self.outbox_id, self.revision = int(row[0]), int(row[1])
            self.instance_data["cqrs_revision"] = self.revision
            # As the general path leaves it: the stored revision.
            instance.__dict__["cqrs_revision"] = self.revision - 1
        # No row deleted: post_delete still follows (as in Django) and the general path records
        # the DELETE with the revision in memory, as it does when the row is gone.
        instance.__dict__[ACTIVE_ATTR] = self
        try:
            signals.post_delete.send(sender=model, instance=instance, using=using, origin=origin)
        finally:
            instance.__dict__.pop(ACTIVE_ATTR, None)
        setattr(instance, model._meta.pk.attname, None)
        if row is None:
            return 0, {}
        return 1, {model._meta.label: 1}

    @staticmethod
    def _execute(conn: Any, sql: str, args: list[Any]) -> Any:
        with conn.cursor() as cursor:
            raw = cursor.cursor
            statement = prepared.execute_sql(conn, raw, sql) if prepared.usable(conn) else None
            if statement is None:
                cursor.execute(sql, args)
            else:
                try:
                    cursor.execute(statement, args)
                except Exception as exc:
                    if not prepared.is_missing_statement(exc):
                        raise
                    prepared.lost(conn)  # autocommit: the failed EXECUTE changed nothing
                    cursor.execute(sql, args)
            return cursor.fetchone()

    def event(self) -> pending.PendingEvent:
        """The DELETE event the statement recorded (call after it deleted the row)."""
        return pending.PendingEvent(
            signal=SignalType.DELETE,
            model=self.model,
            pk=self.instance.pk,
            using=self.using,
            instance=self.instance,
            instance_data=self.instance_data,
            meta={},
            revision=self.revision,
            outbox_id=self.outbox_id,
            correlation_id=self.correlation_id,
        )


def plan(instance: Any, using: str, receiver: Callable[..., Any]) -> InlineDelete | None:
    """An :class:`InlineDelete` for this delete of ``instance`` when it may take that path (before
    collecting: :meth:`InlineDelete.run` checks what the collector found), else None.
    ``receiver`` is dj_cqrs's ``post_delete`` receiver."""
    conn = connections[using]
    if conn.vendor != "postgresql" or conn.in_atomic_block or instance.pk is None or not enabled():
        return None
    model = type(instance)
    if (
        not model.CQRS_PRODUCE
        or cqrs_settings.master.meta_function is not None
        or audit.active()
        or not _model_eligible(model)
    ):
        return None
    if not conn.get_autocommit() or not _only_receiver(model, receiver):
        return None
    return InlineDelete(instance, using)
