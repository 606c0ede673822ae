"""Emitting a domain event: one outbox row in the caller's transaction, published after commit.

:func:`emit` validates its arguments before anything is written, takes the next sequence number
of the event's key (``dj_cqrs_event_sequence``: the row lock it takes orders the emitters of one
key by commit), writes the outbox row (``signal_type`` ``EVENT``) and, at commit, hands it to the
dispatcher that publishes model events (or leaves it to ``cqrs_relay`` with
``outbox_publish="relay"``). A rollback removes both rows: the event never existed. On PostgreSQL
the sequence and the outbox row are one statement.
"""

from __future__ import annotations

import dataclasses
import functools
import uuid
from typing import Any

from django.apps import apps
from django.db import DEFAULT_DB_ALIAS, IntegrityError, connections, transaction
from django.db.models import F
from django.utils import timezone

from dj_cqrs import audit, encoding
from dj_cqrs.core.event import OUTBOX_SIGNAL, EventPayload, check_name, key_text
from dj_cqrs.core.payload import message_expiration
from dj_cqrs.correlation import get_correlation_id
from dj_cqrs.master.dispatcher import dispatcher
from dj_cqrs.master.outbox.store import explained_missing_table, outbox_model
from dj_cqrs.tracing import current_context as current_trace


@dataclasses.dataclass(frozen=True)
class EventSpec:
    """An event to emit (what a model event source yields, see :func:`event`)."""

    name: str
    key: str
    data: dict[str, Any]
    version: int = 1
    meta: dict[str, Any] | None = None


def event(
    name: str,
    key: Any,
    data: dict[str, Any],
    *,
    version: int = 1,
    meta: dict[str, Any] | None = None,
) -> EventSpec:
    """Describe an event without emitting it (checked now, like :func:`emit`'s arguments)."""
    name, key, data, version, meta = _checked(name, key, data, version, meta)
    return EventSpec(name, key, data, version, meta)


def _checked(
    name: Any, key: Any, data: Any, version: Any, meta: Any
) -> tuple[str, str, dict[str, Any], int, dict[str, Any] | None]:
    check_name(name)
    key = key_text(key)
    if not isinstance(data, dict):
        raise TypeError(f"event data must be a dict, got {type(data).__name__}")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"event version must be an int >= 1, got {version!r}")
    if meta is not None and not isinstance(meta, dict):
        raise TypeError(f"event meta must be a dict or None, got {type(meta).__name__}")
    return name, key, data, version, meta


def emit(
    name: str,
    key: Any,
    data: dict[str, Any],
    *,
    version: int = 1,
    meta: dict[str, Any] | None = None,
    using: str | None = None,
) -> str:
    """Write the event ``name`` of aggregate ``key`` into the outbox of database ``using`` (in the
    current transaction, or in one of its own); return its id. Published after commit with
    publisher confirms; never published if the transaction rolls back.

    ``data`` and ``meta`` are encoded now with the encoder of model events (Decimal, datetimes,
    UUID ...): ``TypeError``/``ValueError`` for what it cannot encode (NaN included), before
    anything is written."""
    name, key, data, version, meta = _checked(name, key, data, version, meta)
    return emit_spec(EventSpec(name, key, data, version, meta), using=using)


def new_event_id() -> str:
    """A new event id: a random UUID (version 4), as text."""
    return str(uuid.uuid4())


def emit_spec(spec: EventSpec, using: str | None = None, event_id: str | None = None) -> str:
    """Emit a checked :class:`EventSpec` (see :func:`emit`)."""
    using = using or DEFAULT_DB_ALIAS
    event_id = event_id or new_event_id()
    occurred = timezone.now()
    correlation = get_correlation_id(OUTBOX_SIGNAL, spec.name, spec.key, None)
    captured = {
        "id": event_id,
        "version": spec.version,
        "data": spec.data,
        "meta": audit.merged_or_none(spec.meta),
        "occurred_at": occurred.isoformat(),
        "correlation_id": correlation,
    }
    trace = current_trace()  # the active span's W3C context: sent as message headers
    if trace is not None:
        captured["trace"] = trace
    text = encoding.dumps(captured)
    with explained_missing_table(), transaction.atomic(using=using, savepoint=False):
        outbox_id, seq = _write(using, spec, text, occurred)
        if dispatcher.mode(using) != "relay":
            captured_again = encoding.restore_exact(encoding.loads(text))
            payload = EventPayload(
                id=event_id,
                name=spec.name,
                key=spec.key,
                seq=seq,
                version=spec.version,
                # as the outbox row holds it (exact decimals, dates as text ...), whatever the
                # caller does with its dicts before the commit
                data=captured_again["data"],
                meta=captured_again["meta"],
                occurred_at=occurred,
                correlation_id=correlation,
                expires=message_expiration(),
                trace=trace,
            )
            transaction.on_commit(
                functools.partial(dispatcher.submit, using, [(outbox_id, payload)]), using=using
            )
    return event_id


def _write(using: str, spec: EventSpec, text: str, occurred: Any) -> tuple[int, int]:
    """Take the key's next sequence number and insert the outbox row; ``(outbox id, seq)``."""
    conn = connections[using]
    created = outbox_model()._meta.get_field("created_at").get_db_prep_value(occurred, conn)
    if conn.vendor == "postgresql":
        with conn.cursor() as cursor:
            cursor.execute(
                _postgresql_sql(), [spec.key, created, spec.name, OUTBOX_SIGNAL, spec.key, text]
            )
            outbox_id, seq = cursor.fetchone()
        return int(outbox_id), int(seq)
    seq = _next_seq(using, spec.key)
    row = (
        outbox_model()
        .objects.using(using)
        .create(
            created_at=occurred,
            cqrs_id=spec.name,
            signal_type=OUTBOX_SIGNAL,
            object_pk=spec.key,
            revision=seq,
            data=text,
        )
    )
    return int(row.pk), seq


def _sequence_model() -> Any:
    return apps.get_model("dj_cqrs", "EventSequence")


@functools.cache
def _postgresql_sql() -> str:
    sequence, outbox = _sequence_model()._meta.db_table, outbox_model()._meta.db_table
    return (
        f'WITH "dj_cqrs_seq" AS (INSERT INTO "{sequence}" ("key", "seq") VALUES (%s, 1)'
        f' ON CONFLICT ("key") DO UPDATE SET "seq" = "{sequence}"."seq" + 1 RETURNING "seq")'
        f' INSERT INTO "{outbox}" ("created_at", "cqrs_id", "signal_type", "object_pk", "revision", "data",'
        ' "attempts", "last_error") SELECT %s, %s, %s, %s, "dj_cqrs_seq"."seq", %s, 0, \'\' FROM "dj_cqrs_seq"'
        ' RETURNING "id", "revision"'
    )


def _next_seq(using: str, key: str) -> int:
    """The key's next sequence number (portable path: an UPDATE, or the first INSERT)."""
    model = _sequence_model()
    rows = model.objects.using(using)
    if not rows.filter(key=key).update(seq=F("seq") + 1):
        try:
            with transaction.atomic(using=using):
                rows.create(key=key, seq=1)
            return 1
        except IntegrityError:  # created meanwhile by another transaction
            rows.filter(key=key).update(seq=F("seq") + 1)
    return int(rows.filter(key=key).values_list("seq", flat=True).get())


__all__ = ["EventSpec", "emit", "emit_spec", "event", "new_event_id"]
