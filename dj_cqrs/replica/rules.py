"""The replica's decision rules, in one place: whether a SAVE, SYNC or DELETE is applied.

Both the per-message path (:mod:`.managers`, :mod:`.consumer`) and the batched one
(:mod:`.group`, :mod:`.upsert`) ask these functions, so they decide alike:

* :func:`revision_decision` - a SAVE/SYNC of a stored row: a lower revision is stale, an equal one
  a duplicate unless its ``cqrs_updated`` is later (:func:`is_newer`), a gap is applied and
  logged; a SYNC always applies (a downgrade is logged);
* :func:`tombstone_allows` - a SAVE of a deleted object: applied if its revision is above the
  DELETE's, or if it was stamped more than :data:`CLOCK_MARGIN` after the deletion;
* :func:`delete_is_stale` - a DELETE older than the stored row (a re-created object) is ignored;
* :func:`is_direct_sync` / :func:`ignores_broadcast_sync` - a SYNC to this replica's queue always
  applies; a broadcast one is ignored by ``CQRS_ONLY_DIRECT_SYNCS`` models;
* :func:`delete_pk` / :func:`mapped_pk` - the key a DELETE or a mapped SAVE names.

The log lines are django-cqrs's (``django-cqrs.replica``), plus the broadcast-sync line
(``django-cqrs.consumer``).
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from dj_cqrs.conf import cqrs_settings
from dj_cqrs.constants import SignalType
from dj_cqrs.core.payload import aware_datetime
from dj_cqrs.core.reasons import Reason, Status

logger = logging.getLogger("django-cqrs.replica")
consumer_logger = logging.getLogger("django-cqrs.consumer")

#: How much later than a deletion a SAVE must be stamped, by the master's clock, to be taken for a
#: re-created object when its revision does not say so (absorbs clock differences between hosts).
CLOCK_MARGIN = datetime.timedelta(seconds=1)


# -- revisions ------------------------------------------------------------------------------------


def is_newer(incoming: Any, stored: Any) -> bool:
    """Whether the ``cqrs_updated`` of a message is strictly later than the stored one.

    False when either is missing or unparsable: an equal revision is then a duplicate.
    """
    if isinstance(incoming, str):
        try:
            incoming = parse_datetime(incoming)
        except ValueError:
            return False
    if not isinstance(incoming, datetime.datetime) or not isinstance(stored, datetime.datetime):
        return False
    if timezone.is_naive(incoming) != timezone.is_naive(stored):
        # A naive value (USE_TZ=False on one side) is taken as UTC, as django-cqrs writes it.
        if timezone.is_naive(incoming):
            incoming = incoming.replace(tzinfo=datetime.timezone.utc)
        else:
            stored = stored.replace(tzinfo=datetime.timezone.utc)
    return bool(incoming > stored)


def revision_decision(
    model: Any, pk: Any, incoming: int, incoming_updated: Any, current: int, current_updated: Any, sync: bool
) -> Status:
    """The revision rule for a SAVE/SYNC of a stored row: ``APPLIED``, ``IGNORED_STALE`` or
    ``IGNORED_DUPLICATE``, logged as django-cqrs logs it.

    Without ``sync``: a lower revision is stale, an equal one a duplicate (unless its
    ``cqrs_updated`` is later), a gap is applied (and logged). A sync always applies.
    """
    cqrs_id = model.CQRS_ID
    if sync:
        if incoming < current:
            logger.warning(
                "CQRS revision downgrade on sync: pk = %s, cqrs_revision = new %s / existing %s (%s).",
                pk, incoming, current, cqrs_id,
            )
        return Status.APPLIED
    if incoming < current:
        logger.error(
            "Wrong CQRS sync order: pk = %s, cqrs_revision = new %s / existing %s (%s).", pk, incoming, current, cqrs_id
        )
        return Status.IGNORED_STALE
    if incoming == current:
        if is_newer(incoming_updated, current_updated):
            # django-cqrs masters send two messages with the same revision when two Python
            # objects of one row are saved in one transaction: the first carries the first
            # object's (stale) state, the second the final one, with a later cqrs_updated.
            logger.warning(
                "Same CQRS revision with a newer cqrs_updated, applied: pk = %s, cqrs_revision = %s (%s).",
                pk, current, cqrs_id,
            )
            return Status.APPLIED
        logger.warning("Received duplicate CQRS data: pk = %s, cqrs_revision = %s (%s).", pk, current, cqrs_id)
        if current == 0:
            logger.warning("CQRS potential creation race condition: pk = %s (%s).", pk, cqrs_id)
        return Status.IGNORED_DUPLICATE
    if incoming != current + 1:
        logger.warning(
            "Lost or filtered out %s CQRS packages: pk = %s, cqrs_revision = %s (%s)",
            incoming - current - 1, pk, incoming, cqrs_id,
        )
    return Status.APPLIED


# -- deletions (tombstones) -----------------------------------------------------------------------


def parse_updated(value: Any) -> datetime.datetime | None:
    """A ``cqrs_updated`` as an aware datetime (naive: UTC); None when missing or unparsable."""
    return aware_datetime(value)


def tombstone_allows(tombstone: Any, revision: int, updated: Any) -> bool:
    """Whether a SAVE with ``revision``/``updated`` is newer than the deletion ``tombstone`` records."""
    if revision > tombstone.revision:
        return True
    moment = parse_updated(updated)
    # A master whose revisions restart at 0 for a re-created object (django-cqrs): recognised by
    # time, with a margin for clock differences between master hosts.
    return moment is not None and moment > tombstone.deleted_at + CLOCK_MARGIN


def delete_is_stale(
    stored_revision: int, stored_updated: datetime.datetime | None, revision: Any, deleted_at: datetime.datetime | None
) -> bool:
    """Whether a DELETE must be ignored because the stored row is a later incarnation of the object.

    Both signs are required: a revision at or above the DELETE's (dj_cqrs masters give a re-created
    object a revision above its DELETE's) and a ``cqrs_updated`` after the deletion. A DELETE sent
    with a stale revision by a django-cqrs master, or a stored row stamped by a master host whose
    clock runs ahead, still deletes.
    """
    if not (isinstance(revision, int) and not isinstance(revision, bool) and stored_revision >= revision):
        return False
    return stored_updated is not None and deleted_at is not None and stored_updated > deleted_at


def log_ignored_deleted(model: Any, pk: Any, revision: Any, deleted_revision: Any) -> None:
    logger.warning(
        "CQRS object was deleted: pk = %s, cqrs_revision = %s ignored, deleted at revision %s (%s).",
        pk, revision, deleted_revision, model.CQRS_ID,
    )


def log_stale_delete(model: Any, pk: Any, revision: Any, stored_revision: Any) -> None:
    logger.warning(
        "CQRS delete is older than the stored row (a re-created object): pk = %s,"
        " cqrs_revision = %s / existing %s ignored (%s).",
        pk, revision, stored_revision, model.CQRS_ID,
    )


# -- syncs ----------------------------------------------------------------------------------------


def is_direct_sync(signal: SignalType, queue: str | None) -> bool:
    """A SYNC sent to this replica's queue (``cqrs_sync --queue``), not broadcast."""
    return signal is SignalType.SYNC and queue is not None and queue == cqrs_settings.queue


def ignores_broadcast_sync(model: Any, signal: SignalType, queue: str | None) -> bool:
    """True (and logged) for a broadcast SYNC of a ``CQRS_ONLY_DIRECT_SYNCS`` model."""
    if signal is SignalType.SYNC and getattr(model, "CQRS_ONLY_DIRECT_SYNCS", False) and queue != cqrs_settings.queue:
        consumer_logger.info("CQRS broadcast sync ignored for %s (CQRS_ONLY_DIRECT_SYNCS).", model.CQRS_ID)
        return True
    return False


# -- keys -----------------------------------------------------------------------------------------


def delete_pk(model: Any, master_data: dict[str, Any]) -> tuple[Any, Reason | None]:
    """The key a DELETE names (``id``, whatever the primary key is called), or a failure reason
    (``missing_pk``/``bad_pk``/``missing_cqrs_fields``, logged)."""
    raw = master_data.get("id")
    if raw is None:
        logger.error("CQRS PK is not provided in data (%s).", model.CQRS_ID)
        return None, Reason.MISSING_PK
    if "cqrs_revision" not in master_data or "cqrs_updated" not in master_data:
        logger.error("CQRS sync fields are not provided in data (%s).", model.CQRS_ID)
        return None, Reason.MISSING_CQRS_FIELDS
    try:
        return model._meta.pk.to_python(raw), None
    except ValidationError:
        logger.error("CQRS PK is not valid for %s: %r", model.CQRS_ID, raw)
        return None, Reason.BAD_PK


def mapped_pk(model: Any, mapped: dict[str, Any]) -> Any:
    """The canonical key of a mapped row (a foreign-key key is under its attname); raises
    ``ValidationError`` when it does not convert."""
    field = model._meta.pk
    return field.to_python(mapped.get(field.attname, mapped.get(field.name)))


__all__ = [
    "CLOCK_MARGIN",
    "delete_is_stale",
    "delete_pk",
    "ignores_broadcast_sync",
    "is_direct_sync",
    "is_newer",
    "log_ignored_deleted",
    "log_stale_delete",
    "mapped_pk",
    "parse_updated",
    "revision_decision",
    "tombstone_allows",
]
