"""The outbox table: whether master events go through it, its model, and its rows as read back."""

from __future__ import annotations

import contextlib
import datetime
import functools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from django.db import DatabaseError

from dj_cqrs.conf import cqrs_settings
from dj_cqrs.constants import OUTBOX_TABLE
from dj_cqrs.exceptions import ConfigurationError
from dj_cqrs.registry import app_model

if TYPE_CHECKING:
    from dj_cqrs.models import OutboxEvent


#: The tables whose absence means "migrate dj_cqrs was not run" (the outbox, the events' key sequences).
DJ_CQRS_TABLES = (OUTBOX_TABLE, "dj_cqrs_event_sequence", "dj_cqrs_event_source")


def enabled() -> bool:
    return bool(cqrs_settings.master.CQRS_OUTBOX)


@functools.cache
def outbox_model() -> type[OutboxEvent]:
    """The outbox model, from the app registry (the master layer is imported while the project's
    models are being defined, before ``dj_cqrs.models`` may be)."""
    return cast("type[OutboxEvent]", app_model("OutboxEvent"))


@contextlib.contextmanager
def explained_missing_table() -> Iterator[None]:
    """A missing outbox table (``migrate dj_cqrs`` not run after moving from django-cqrs) is
    reported as such, not as a bare database error."""
    try:
        yield
    except DatabaseError as exc:
        text = str(exc).lower()
        missing = "does not exist" in text or "no such table" in text or "doesn't exist" in text
        if missing and any(table in text for table in DJ_CQRS_TABLES):
            raise ConfigurationError(
                f"dj_cqrs.E060: a table of the dj_cqrs app ({OUTBOX_TABLE}, or the domain events'"
                " tables) does not exist on this database: run `manage.py migrate dj_cqrs` (needed once"
                " after moving from django-cqrs, and after an upgrade that adds a migration)"
            ) from exc
        raise


class OutboxRow(NamedTuple):
    """The columns of an outbox row the publisher needs (read without building model instances)."""

    pk: int
    cqrs_id: str
    signal_type: str
    object_pk: str
    data: str
    created_at: datetime.datetime
    #: The object's revision; a domain event's sequence number in its key.
    revision: int | None = None


_ROW_COLUMNS = ("id", "cqrs_id", "signal_type", "object_pk", "data", "created_at", "revision")


def read_rows(qs: Any) -> list[OutboxRow]:
    return [OutboxRow(*values) for values in qs.values_list(*_ROW_COLUMNS)]
