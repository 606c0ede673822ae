"""Read-your-writes, replica side: wait until this replica has applied a master's change.

``wait_for(cqrs_id, pk, revision, timeout=...)`` returns True as soon as the replica row of
``pk`` has ``cqrs_revision >= revision``, or the object's tombstone (its deletion) is at or above
``revision``; False when ``timeout`` seconds pass first. The caller's transaction, if any, must be
able to see other transactions' commits (PostgreSQL's default READ COMMITTED does).

How it waits, without a busy loop against the database:

* **PostgreSQL**: on a connection of its own (opened for the wait, closed after) to the
  database the consumers write to (the router's ``db_for_write``: a read database may be a hot
  standby, where neither LISTEN nor the notifications exist), it runs ``LISTEN cqrs_<cqrs_id>``,
  then checks the row where reads go; the consumers send ``NOTIFY`` on that channel
  in every transaction that applies messages of the model (:mod:`dj_cqrs.replica.notify`), so the
  waiter checks again only when something of the model was committed, and at least once a second
  (a safety net for notifications turned off or lost);
* **other databases**: it checks with a back-off, 20 ms doubling up to 1 s between checks.
"""

from __future__ import annotations

import inspect
import logging
import select
import time
from typing import Any

from django.apps import apps
from django.db import DatabaseError, connections, router

from dj_cqrs.exceptions import ConfigurationError
from dj_cqrs.registry import replica_registry
from dj_cqrs.replica import notify, tombstones

logger = logging.getLogger("django-cqrs.read_your_writes")

#: First and longest pause between two checks (the fallback poll; the safety net when listening).
FIRST_PAUSE = 0.02
MAX_PAUSE = 1.0


def _model(cqrs_id: str) -> Any:
    model = replica_registry.get_model_by_cqrs_id(cqrs_id)
    if model is None:
        raise ConfigurationError(f"no replica model has CQRS_ID {cqrs_id!r}")
    if getattr(model, "CQRS_NO_DB_OPERATIONS", False) or not hasattr(model, "_base_manager"):
        raise ConfigurationError(
            f"the replica model of {cqrs_id!r} stores no rows: there is nothing to wait for"
        )
    return model


def applied(cqrs_id: str, pk: Any, revision: int, using: str | None = None) -> bool:
    """Whether this replica has applied ``revision`` of ``pk`` (or a later one, or its deletion)."""
    model = _model(cqrs_id)
    db = using or router.db_for_read(model)
    try:
        stored = (
            model._base_manager.using(db)
            .filter(pk=pk)
            .values_list("cqrs_revision", flat=True)
            .first()
        )
    except (ValueError, TypeError) as exc:  # a primary key the field cannot take
        raise ConfigurationError(f"bad primary key {pk!r} for {cqrs_id!r}: {exc}") from exc
    if stored is not None:
        return int(stored) >= revision
    if not tombstones.ready(model):
        return False
    stone = (
        apps.get_model("dj_cqrs", "Tombstone")
        .objects.using(router.db_for_write(model))
        .filter(cqrs_id=cqrs_id, object_pk=tombstones.pk_key(pk))
        .values_list("revision", flat=True)
        .first()
    )
    return stone is not None and int(stone) >= revision


def wait_for(
    cqrs_id: str, pk: Any, revision: int, timeout: float = 5.0, *, using: str | None = None
) -> bool:
    """True once the replica has applied ``revision`` of ``pk`` (or later, or the delete); False
    after ``timeout`` seconds. See the module docstring for how it waits."""
    deadline = time.monotonic() + max(0.0, timeout)
    model = _model(cqrs_id)
    db = using or router.db_for_read(model)
    # The consumers send NOTIFY on the database they write to; the row is read where the router
    # sends reads, which may be a hot standby (no LISTEN there, and no notification reaches it).
    listen_db = router.db_for_write(model)
    if notify.enabled(listen_db) and timeout > 0:
        return _listening(cqrs_id, pk, revision, db, listen_db, deadline)
    return _polling(cqrs_id, pk, revision, db, deadline)


def _polling(cqrs_id: str, pk: Any, revision: int, db: str, deadline: float) -> bool:
    pause = FIRST_PAUSE
    while True:
        if applied(cqrs_id, pk, revision, db):
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(pause, left))
        pause = min(pause * 2, MAX_PAUSE)


def _listening(
    cqrs_id: str, pk: Any, revision: int, db: str, listen_db: str, deadline: float
) -> bool:
    listener: Any = connections.create_connection(listen_db)
    try:
        try:
            listener.ensure_connection()
            raw: Any = listener.connection
            raw.autocommit = True
            with raw.cursor() as cursor:
                cursor.execute(f'LISTEN "{notify.channel(cqrs_id)}"')
        except (DatabaseError, listener.Database.Error):  # no LISTEN there: poll instead
            logger.warning("CQRS wait_for cannot LISTEN on %r: polling", listen_db, exc_info=True)
            return _polling(cqrs_id, pk, revision, db, deadline)
        # Listening first: a commit between the check and the wait still wakes the wait.
        while True:
            if applied(cqrs_id, pk, revision, db):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            _wait_notification(raw, min(left, MAX_PAUSE))
    finally:
        _unlisten(listener)
        listener.close()


def _unlisten(listener: Any) -> None:
    """Stop listening before the connection is closed: with Django's psycopg pool
    (``OPTIONS["pool"]``) closing gives it back to the pool, which would keep the LISTEN and
    hand it to the application's next queries."""
    if listener.connection is None:
        return
    try:
        with listener.connection.cursor() as cursor:
            cursor.execute("UNLISTEN *")
    except listener.Database.Error:  # a broken connection: closed anyway
        pass


def _wait_notification(raw: Any, timeout: float) -> None:
    """Block until a notification arrives on ``raw`` or ``timeout`` passes; drop what arrived."""
    notifies = raw.notifies
    if callable(notifies):  # psycopg 3
        if "timeout" in inspect.signature(notifies).parameters:
            for _ in notifies(timeout=timeout, stop_after=1):
                pass
            return
        # psycopg 3.1 (Django 4.2 and 5.x accept it): notifies() takes no timeout and blocks
        # until a notification comes, so wait on the socket and drain libpq's queue.
        select.select([raw.fileno()], [], [], timeout)
        raw.pgconn.consume_input()
        while raw.pgconn.notifies() is not None:
            pass
        return
    if not notifies:  # psycopg2: a list filled by poll()
        select.select([raw], [], [], timeout)
        raw.poll()
    notifies.clear()


__all__ = ["applied", "wait_for"]
