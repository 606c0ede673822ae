"""Deletes that stay deleted: the replica remembers deletions for ``replica.tombstone_horizon``.

When a DELETE is applied, a tombstone records the object's DELETE revision and the master's time
of deletion (its ``cqrs_updated``). A later SAVE or broadcast SYNC of that object is:

* applied if its revision is above the tombstone's (the same object moved on; dj_cqrs masters
  also give an object re-created with the same primary key a revision above its DELETE's);
* applied if its ``cqrs_updated`` is more than ``CLOCK_MARGIN`` after the deletion (a re-created
  object from a master whose revisions restart at 0, such as django-cqrs);
* ignored otherwise (a message of the deleted object delivered late), and logged.

A direct sync (``cqrs_sync(queue=...)`` to this replica's queue) always applies. Applying a SAVE
removes the tombstone. A DELETE is ignored when the stored row is a later incarnation: its
revision is at or above the DELETE's *and* it was written after the deletion. Times come from the
master hosts' clocks; keep them in sync (NTP).

This module stores, finds and prunes tombstones; the rules that read them are in
:mod:`dj_cqrs.replica.rules`.
"""

from __future__ import annotations

import datetime
import logging
import time
from typing import Any

from django.db import connections, router
from django.utils import timezone

from dj_cqrs.conf import cqrs_settings
from dj_cqrs.registry import app_model
from dj_cqrs.replica.pg_arrays import text_array
from dj_cqrs.replica.rules import parse_updated

logger = logging.getLogger("django-cqrs.replica")

PRUNE_EVERY = 600.0
_state: dict[str, Any] = {"last_prune": 0.0, "missing_table_logged": False}


def enabled() -> bool:
    return cqrs_settings.replica.tombstone_horizon is not None


def pk_key(value: Any) -> str:
    return str(value)


def _model() -> Any:
    return app_model("Tombstone")


def _db(model: Any) -> str:
    return router.db_for_write(model)


def _table_ready(using: str) -> bool:
    """Whether the tombstone table exists on ``using`` (checked once per process and alias)."""
    known = _state.setdefault("tables", {})
    if using not in known:
        with connections[using].cursor() as cursor:
            names = connections[using].introspection.table_names(cursor)
        known[using] = _model()._meta.db_table in names
        if not known[using]:
            _log_missing_table()
    return bool(known[using])


def find(model: Any, pks: list[Any]) -> dict[str, Any]:
    """Tombstones of ``model`` for these primary keys, by ``pk_key``."""
    if not pks or not ready(model):
        return {}
    using = _db(model)
    keys = [pk_key(pk) for pk in pks]
    manager = _model().objects.using(using)
    if connections[using].vendor == "postgresql":  # one array parameter: much cheaper than IN (...)
        rows = manager.raw(
            "SELECT id, cqrs_id, object_pk, revision, deleted_at, recorded_at FROM dj_cqrs_tombstone"
            " WHERE cqrs_id = %s AND object_pk = ANY(%s::varchar[])",
            [model.CQRS_ID, text_array(keys)],
        )
    else:
        rows = manager.filter(cqrs_id=model.CQRS_ID, object_pk__in=keys)
    return {row.object_pk: row for row in rows}


def record(model: Any, pk: Any, revision: Any, updated: Any) -> None:
    """Remember that ``pk`` of ``model`` was deleted at ``revision``."""
    record_many(model, {pk: new(revision, updated)})


def ready(model: Any) -> bool:
    """Whether deletions of ``model`` are remembered (enabled, and the table exists)."""
    return enabled() and _table_ready(_db(model))


def new(revision: Any, updated: Any) -> Any:
    """An unsaved tombstone for a DELETE with this revision and ``cqrs_updated`` (as ``record``)."""
    if not isinstance(revision, int) or isinstance(revision, bool):
        revision = 0
    now = timezone.now()
    return _model()(revision=revision, deleted_at=parse_updated(updated) or now, recorded_at=now)


def record_many(model: Any, stones: dict[Any, Any]) -> None:
    """Store tombstones (from :func:`new`) by primary key, replacing older ones of the same objects."""
    if not stones or not ready(model):
        return
    using = _db(model)
    rows = []
    for pk, stone in stones.items():
        stone.cqrs_id = model.CQRS_ID
        stone.object_pk = pk_key(pk)
        rows.append(stone)
    features = connections[using].features
    if not features.supports_update_conflicts:
        for stone in rows:
            _model().objects.using(using).update_or_create(
                cqrs_id=stone.cqrs_id,
                object_pk=stone.object_pk,
                defaults={"revision": stone.revision, "deleted_at": stone.deleted_at, "recorded_at": stone.recorded_at},
            )
        return
    target = ["cqrs_id", "object_pk"] if features.supports_update_conflicts_with_target else None
    _model().objects.using(using).bulk_create(
        rows, update_conflicts=True, unique_fields=target, update_fields=["revision", "deleted_at", "recorded_at"]
    )


def clear(model: Any, pks: list[Any]) -> None:
    if not pks or not ready(model):
        return
    _model().objects.using(_db(model)).filter(cqrs_id=model.CQRS_ID, object_pk__in=[pk_key(p) for p in pks]).delete()


def prune_if_due(using: str | None = None) -> int:
    """Delete tombstones older than the horizon (at most every 10 minutes)."""
    horizon = cqrs_settings.replica.tombstone_horizon
    if horizon is None:
        return 0
    now = time.monotonic()
    if now - _state["last_prune"] < PRUNE_EVERY:
        return 0
    _state["last_prune"] = now
    return prune(horizon, using)


def prune(horizon: float, using: str | None = None) -> int:
    tombstone = _model()
    alias = using or router.db_for_write(tombstone)
    if not _table_ready(alias):
        return 0
    cutoff = timezone.now() - datetime.timedelta(seconds=horizon)
    deleted, _ = tombstone.objects.using(alias).filter(recorded_at__lt=cutoff).delete()
    if deleted:
        logger.info("Pruned %s CQRS tombstone(s) older than %ss", deleted, horizon)
    return int(deleted)


def _log_missing_table() -> None:
    if not _state["missing_table_logged"]:
        _state["missing_table_logged"] = True
        logger.error(
            "The dj_cqrs_tombstone table is missing: deletes are not remembered, so a late SAVE can"
            " re-create a deleted row. Run `manage.py migrate dj_cqrs`."
        )
