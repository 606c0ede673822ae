"""Database triggers for master models with ``CQRS_DB_TRIGGERS = True`` (PostgreSQL).

With triggers, every write to the table produces its event inside the same transaction, whatever
made it: ``save()``, ``QuerySet.update()``, Django's ``bulk_update``, ``QuerySet.delete()`` (with or
without signals), or raw SQL. Two row-level triggers, managed by django-pgtrigger:

* ``BEFORE INSERT OR UPDATE``: the first write to a row in a transaction bumps ``cqrs_revision``
  (later ones keep it); ``cqrs_updated`` is set to ``now()`` unless the writer changed it; a row
  inserted with the primary key of one deleted earlier continues after the DELETE's revision.
* ``AFTER INSERT OR UPDATE OR DELETE``: writes the outbox row, once per row and transaction for
  SAVEs; a DELETE carries ``{"id", "cqrs_revision", "cqrs_updated"}``.

Limits (documented in docs/outbox.md): ``previous_data`` holds the stored values of the tracked
columns before the first change of the transaction (datetimes in ISO form, with a ``T``); ``meta``
is ``{}`` and ``get_custom_cqrs_delete_data`` is not called; the correlation id is the session
setting ``dj_cqrs.correlation_id`` when set. Writes made by raw SQL are published by the relay or
the sweep of a later commit (nothing in the process knows about them right away).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.db import connections

from dj_cqrs.constants import OUTBOX_TABLE
from dj_cqrs.master import tracking
from dj_cqrs.registry import master_registry

logger = logging.getLogger("django-cqrs.master")

BUMP = "dj_cqrs_bump"
OUTBOX = "dj_cqrs_outbox"
_installed: dict[tuple[str, str], tuple[bool, float]] = {}
#: How long the answer "are the triggers installed?" is trusted (a migration may add or remove them
#: while the process runs).
RECHECK_AFTER = 60.0


def wanted(model: Any) -> bool:
    return bool(getattr(model, "CQRS_DB_TRIGGERS", False))


def active(model: Any, using: str) -> bool:
    """Whether the triggers of ``model`` capture its writes on ``using`` (checked once)."""
    if not wanted(model):
        return False
    conn = connections[using]
    if conn.vendor != "postgresql":
        return False
    key = (using, model._meta.db_table)
    known = _installed.get(key)
    if known is None or time.monotonic() - known[1] > RECHECK_AFTER:
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
                " WHERE c.relname = %s AND t.tgname LIKE %s",
                [model._meta.db_table, f"pgtrigger_{OUTBOX}_%"],
            )
            found = cursor.fetchone()[0] > 0
        if not found:
            logger.error(
                "%s declares CQRS_DB_TRIGGERS but its triggers are not installed on %r: run"
                " `manage.py migrate` (dj_cqrs installs them after migrating). Until then its ORM"
                " writes are captured in Python only.",
                model.__name__,
                using,
            )
        _installed[key] = (found, time.monotonic())
    return _installed[key][0]


def forget() -> None:
    _installed.clear()


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _outbox_table() -> str:
    return _quote(OUTBOX_TABLE)


def _previous_sql(model: Any, operation: str) -> str:
    fields = tracking.tracked_fields(model)
    if not fields:
        return "_prev := NULL;"
    lines = ["_prev := '{}'::jsonb;"]
    for name, _attname in fields:
        column = _quote(model._meta.get_field(name).column)
        key = _literal(name)
        if operation == "INSERT":
            lines.append(f"IF NEW.{column} IS NOT NULL THEN _prev := _prev || jsonb_build_object({key}, NULL); END IF;")
        else:
            lines.append(
                f"IF NEW.{column} IS DISTINCT FROM OLD.{column} THEN"
                f" _prev := _prev || jsonb_build_object({key}, OLD.{column}); END IF;"
            )
    return "\n".join(lines)


def _exists_sql(cqrs_id: str, pk_expr: str) -> str:
    return (
        f"EXISTS (SELECT 1 FROM {_outbox_table()} WHERE cqrs_id = {_literal(cqrs_id)}"
        f" AND object_pk = ({pk_expr})::text AND txid = txid_current() AND signal_type = 'SAVE')"
    )


def bump_function(model: Any) -> str:
    pk = _quote(model._meta.pk.column)
    rev = _quote(model._meta.get_field("cqrs_revision").column)
    upd = _quote(model._meta.get_field("cqrs_updated").column)
    cqrs_id = model.CQRS_ID
    return f"""
IF TG_OP = 'INSERT' THEN
    IF NEW.{rev} IS NULL THEN NEW.{rev} := 0; END IF;
    IF NEW.{upd} IS NULL THEN NEW.{upd} := now(); END IF;
    SELECT revision INTO _last FROM {_outbox_table()}
        WHERE cqrs_id = {_literal(cqrs_id)} AND object_pk = (NEW.{pk})::text AND signal_type = 'DELETE'
        ORDER BY id DESC LIMIT 1;
    IF _last IS NOT NULL AND NEW.{rev} <= _last THEN NEW.{rev} := _last + 1; END IF;
ELSE
    IF {_exists_sql(cqrs_id, "OLD." + pk)} THEN
        NEW.{rev} := OLD.{rev};
    ELSE
        NEW.{rev} := OLD.{rev} + 1;
    END IF;
    IF NEW.{upd} IS NOT DISTINCT FROM OLD.{upd} THEN NEW.{upd} := now(); END IF;
END IF;
RETURN NEW;
"""


def outbox_function(model: Any) -> str:
    pk = _quote(model._meta.pk.column)
    rev = _quote(model._meta.get_field("cqrs_revision").column)
    cqrs_id = _literal(model.CQRS_ID)
    table = _outbox_table()
    columns = "created_at, cqrs_id, signal_type, object_pk, revision, data, attempts, last_error, txid"
    correlation = "NULLIF(current_setting('dj_cqrs.correlation_id', true), '')"
    stamp = "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00:00'"
    return f"""
IF TG_OP = 'DELETE' THEN
    INSERT INTO {table} ({columns}) VALUES (
        now(), {cqrs_id}, 'DELETE', (OLD.{pk})::text, OLD.{rev} + 1,
        jsonb_build_object(
            'instance_data', jsonb_build_object('id', to_jsonb(OLD.{pk}), 'cqrs_revision', OLD.{rev} + 1, 'cqrs_updated', {stamp}),
            'meta', '{{}}'::jsonb,
            'correlation_id', {correlation}
        )::text,
        0, '', txid_current());
    RETURN OLD;
END IF;
IF NOT {_exists_sql(model.CQRS_ID, "NEW." + pk)} THEN
    IF TG_OP = 'INSERT' THEN
        {_previous_sql(model, "INSERT")}
    ELSE
        {_previous_sql(model, "UPDATE")}
    END IF;
    INSERT INTO {table} ({columns}) VALUES (
        now(), {cqrs_id}, 'SAVE', (NEW.{pk})::text, NEW.{rev},
        jsonb_build_object('previous_data', _prev, 'meta', '{{}}'::jsonb, 'correlation_id', {correlation})::text,
        0, '', txid_current());
END IF;
RETURN NEW;
"""


def build(model: Any) -> list[Any]:
    """The pgtrigger triggers of ``model``."""
    import pgtrigger

    return [
        pgtrigger.Trigger(
            name=BUMP,
            when=pgtrigger.Before,
            operation=pgtrigger.Insert | pgtrigger.Update,
            declare=[("_last", "integer")],
            func=bump_function(model),
        ),
        pgtrigger.Trigger(
            name=OUTBOX,
            when=pgtrigger.After,
            operation=pgtrigger.Insert | pgtrigger.Update | pgtrigger.Delete,
            declare=[("_prev", "jsonb")],
            func=outbox_function(model),
        ),
    ]


def register(model: Any) -> None:
    """Register the triggers of a master model that sets ``CQRS_DB_TRIGGERS = True``."""
    if not wanted(model):
        return
    try:
        import pgtrigger  # noqa: F401
    except ImportError:  # reported by the system check dj_cqrs.E050
        return
    if getattr(model._meta, "abstract", False):
        return
    for trigger in build(model):
        trigger.register(model)


def install(using: str) -> int:
    """Install (create or replace) the triggers of every trigger model on ``using``."""
    conn = connections[using]
    if conn.vendor != "postgresql":
        return 0
    import pgtrigger

    uris: list[str] = []
    for model in master_registry:
        if wanted(model):
            uris.extend(trigger.get_uri(model) for trigger in build(model))
    if uris:
        pgtrigger.install(*uris, database=using)
        forget()
    return len(uris)
