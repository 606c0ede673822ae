"""Batched apply: many received messages, one transaction and a few set-based statements per model.

:func:`handle_batch` is what the consumers call with the messages they received together (up to
``replica.CQRS_BATCH_SIZE``). For every model of the batch it:

1. maps and validates each message exactly as the per-message path does (``CQRS_MAPPING``,
   required fields, value conversion), without touching the database;
2. in one transaction, locks the objects (advisory locks on PostgreSQL, then ``SELECT ... FOR
   UPDATE`` of their ``cqrs_revision``/``cqrs_updated``) and reads their tombstones;
3. replays the messages in delivery order against that state with the per-message rules (revision
   guard, equal revision with a later ``cqrs_updated``, syncs that may downgrade, broadcast syncs
   of ``CQRS_ONLY_DIRECT_SYNCS`` models, tombstones, stale deletes), so several messages for one
   object end as applying them one by one would;
4. writes the result: one ``DELETE`` (through the ORM, so cascades and delete signals run), one
   upsert (``INSERT ... ON CONFLICT ... DO UPDATE`` on PostgreSQL and SQLite, a locked
   ``SELECT`` + ``INSERT``/``UPDATE`` elsewhere, see :mod:`.upsert`) and the tombstone changes.

Steps 2 to 4 are :func:`dj_cqrs.replica.group.apply_group`; which models take them is
:mod:`.eligibility`'s question. Each message gets the :class:`~dj_cqrs.core.messages.Outcome` the per-message path would have
given it. When a model's transaction fails (a value the database rejects, a bug), it is rolled back
and the messages are split in halves, in order, down to single messages, which take the
per-message path: the good messages are applied and only the bad ones are retried or
dead-lettered. A database outage (:func:`dj_cqrs.database.is_outage`: connection refused or lost)
leaves the messages for redelivery (``REQUEUE``); :func:`handle_batch_through_outages` holds them
and applies them again once the database is back.

Models whose writes must run Python code per row (overridden ``cqrs_save``/``cqrs_create``/
``cqrs_update``/``cqrs_delete``/``save()``, save signals, ``CQRS_CUSTOM_SERIALIZATION``,
``CQRS_NO_DB_OPERATIONS``, ``RawReplicaMixin`` handlers ...) keep the per-message path, one
transaction per message, inside the same batch. ``replica.CQRS_BATCH_APPLY = False`` turns the
set-based path off altogether.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from dj_cqrs.conf import cqrs_settings
from dj_cqrs.core.messages import InboundMessage, Outcome
from dj_cqrs.database import hold_through_outages
from dj_cqrs.registry import replica_registry
from dj_cqrs.replica.consumer import apply
from dj_cqrs.replica.decoding import validate
from dj_cqrs.replica.eligibility import batch_reason, is_db_model, related_models
from dj_cqrs.replica.failures import internal_error
from dj_cqrs.replica.group import Item, apply_group
from dj_cqrs.replica.outcome_log import log_outcome

logger = logging.getLogger("django-cqrs.consumer")


def handle_batch(messages: Sequence[InboundMessage], tick: Callable[[], None] | None = None) -> list[Outcome]:
    """Decide (and apply) every message of a batch; one outcome per message, in order. Never raises.

    Messages of one model are applied together; delivery order is kept between models that are
    related (a foreign key either way): the pending group of a related model is applied before a
    message of the other one is taken. Event handlers (``RawReplicaMixin``,
    ``CQRS_NO_DB_OPERATIONS``) apply everything pending first. ``tick`` is called between
    groups and between per-message applies (a transport keeps its connection alive there).
    """
    outcomes: list[Outcome | None] = [None] * len(messages)
    pending: dict[Any, list[Item]] = {}
    reasons: dict[Any, str | None] = {}
    barriers: dict[Any, Any] = {}  # model -> the pending models it must not overtake
    set_based = cqrs_settings.replica.CQRS_BATCH_APPLY
    max_bytes = cqrs_settings.replica.max_message_bytes  # read once per batch, not per message

    def apply_pending(models: Any) -> None:
        for model in [m for m in pending if m in models]:
            for index, outcome in apply_group(model, pending.pop(model), tick).items():
                outcomes[index] = outcome
            if tick is not None:
                tick()

    for index, message in enumerate(messages):
        try:
            checked = validate(message, max_bytes)
        except Exception as exc:  # noqa: BLE001 - a message never kills the worker
            checked = internal_error(exc)
        if isinstance(checked, Outcome):
            outcomes[index] = checked
            continue
        model = replica_registry.get_model_by_cqrs_id(checked.cqrs_id)
        if model not in reasons:
            reasons[model] = batch_reason(model) if set_based else "CQRS_BATCH_APPLY is False"
            barriers[model] = related_models(model) if is_db_model(model) else None
        if pending:
            apply_pending(list(pending) if barriers[model] is None else barriers[model])
        if reasons[model] is None:
            pending.setdefault(model, []).append((index, checked))
            continue
        outcomes[index] = apply(checked)
        if tick is not None:
            tick()
    apply_pending(list(pending))
    final: list[Outcome] = []
    for message, maybe in zip(messages, outcomes, strict=True):
        assert maybe is not None
        final.append(log_outcome(maybe, message))
    return final


def handle_batch_through_outages(
    messages: Sequence[InboundMessage],
    wait: Callable[[float], bool] | None,
    tick: Callable[[], None] | None = None,
) -> list[Outcome]:
    """:func:`handle_batch`, holding the messages that met a database outage (``REQUEUE``) and
    applying them again, with back-off, until the database is back, however long that takes.
    The replica's :class:`~dj_cqrs.core.messages.ConsumeHandler`: what ``cqrs_consume`` workers
    pass to the transport's consume loop.

    ``wait(seconds)`` sleeps while the transport keeps its broker connection alive and returns True
    when the worker is asked to stop: the messages still waiting then keep their ``REQUEUE``
    outcome (the transport leaves them unacknowledged). No retry is counted and nothing is
    dead-lettered for an outage. One WARNING when it starts, one INFO when the database is back.
    ``wait=None`` (the in-memory transport) returns the ``REQUEUE`` outcomes at once.
    """
    return hold_through_outages(lambda batch: handle_batch(batch, tick), messages, wait, "Replica database", logger)


__all__ = ["apply_group", "batch_reason", "handle_batch", "handle_batch_through_outages"]
