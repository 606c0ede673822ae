"""``Model.cqrs``: bulk operations on master models that still publish one event per row."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import models, transaction
from django.db.models import F
from django.dispatch import dispatcher
from django.utils import timezone

from dj_cqrs import audit
from dj_cqrs.constants import SignalType
from dj_cqrs.correlation import current_correlation_id
from dj_cqrs.encoding import to_json_value
from dj_cqrs.master import dispatch, hooks, pending, tracking, triggers
from dj_cqrs.master.outbox import inline, recording, store
from dj_cqrs.master.signals import INLINE_MARK_ATTR, dispatch_uid, post_update


class MasterManager(models.Manager):  # type: ignore[type-arg]
    """The ``cqrs`` manager of master models."""

    def bulk_create(self, objs: Iterable[Any], **kwargs: Any) -> list[Any]:  # type: ignore[override]
        """Django's ``bulk_create`` plus one SAVE event per created object.

        The objects must have primary keys after the insert (returned by the database, or set
        by the caller).
        """
        if self.model.CQRS_PRODUCE:
            dispatch.transport_resolves()
        objs = list(objs)
        # With conflicts ignored or updated, memory does not tell what the database kept.
        must_read = bool(kwargs.get("ignore_conflicts") or kwargs.get("update_conflicts"))
        for obj in objs:
            obj.__dict__["_cqrs_bulk_previous"] = tracking.changes(obj, created=True)
            if must_read:
                obj.__dict__["_cqrs_must_read"] = True
        data = None if must_read else _constant_inline_data(self.model, self.db)
        with transaction.atomic(using=self.db, savepoint=False):
            if data is None:
                created = super().get_queryset().bulk_create(objs, **kwargs)
            else:
                # The INSERTs write the outbox rows too (one statement per batch).
                with inline.InlineRows(self.model, self.db, data).installed() as rows:
                    created = super().get_queryset().bulk_create(objs, **kwargs)
                marks = {pk: (revision, outbox_id) for pk, revision, outbox_id in rows.written}
                for obj in created:
                    mark = marks.get(obj.pk)
                    if mark is not None:
                        obj.__dict__[INLINE_MARK_ATTR] = mark
            self.model.call_post_bulk_create(created, using=self.db)  # type: ignore[attr-defined]
        return created

    def bulk_update(self, queryset: models.QuerySet[Any], **kwargs: Any) -> int:  # type: ignore[override]
        """Update every row of ``queryset`` with ``kwargs`` and publish one SAVE per row.

        Note the signature (django-cqrs's): a queryset and the values to set, not Django's
        ``bulk_update(objs, fields)``. ``previous_data`` holds every tracked value before the update.
        """
        if self.model.CQRS_PRODUCE:
            dispatch.transport_resolves()
        model = self.model
        using = queryset.db
        data = _constant_inline_data(model, using)
        if (
            data is not None
            and not queryset.query.is_sliced
            and not queryset.query.distinct
            and not _has_other_receivers(post_update, model)
        ):
            return _update_inline(model, queryset, using, data, kwargs)
        base = model._base_manager.using(using)
        with transaction.atomic(using=using, savepoint=False):
            pks = list(queryset.values_list("pk", flat=True))
            if not pks:
                return 0
            fields = tracking.tracked_fields(model)
            previous: dict[Any, dict[str, Any]] = {}
            if fields:
                attnames = [attname for _, attname in fields]
                for start in range(0, len(pks), 1000):
                    for row in base.filter(pk__in=pks[start : start + 1000]).values("pk", *attnames):
                        previous[row["pk"]] = {
                            name: to_json_value(row[attname]) for name, attname in fields
                        }
            count = 0
            now = timezone.now()
            for start in range(0, len(pks), 1000):
                count += base.filter(pk__in=pks[start : start + 1000]).update(
                    cqrs_revision=F("cqrs_revision") + 1, cqrs_updated=now, **kwargs
                )
            recorded = _record_in_bulk(model, using, pks)
            if recorded and not _has_other_receivers(post_update, model):
                return count
            instances: list[Any] = []
            for start in range(0, len(pks), 1000):
                instances.extend(base.filter(pk__in=pks[start : start + 1000]))
            model.call_post_update(  # type: ignore[attr-defined]
                instances, using=using, previous_data=previous if fields else None, cqrs_recorded=recorded
            )
        return count


def _constant_inline_data(model: Any, using: str) -> str | None:
    """The captured data of every event of a bulk write of ``model`` when the statements can
    write the outbox rows themselves (:class:`dj_cqrs.master.outbox.inline.InlineRows`), else None."""
    if not inline.rows_eligible(model, using) or tracking.tracked_fields(model) or triggers.active(model, using):
        return None
    return recording.constant_data(model)


def _update_inline(model: Any, queryset: models.QuerySet[Any], using: str, data: str, values: dict[str, Any]) -> int:
    """``bulk_update`` in one statement: the UPDATE of the rows also writes their outbox rows."""
    with inline.InlineRows(model, using, data).installed() as rows:
        count = queryset.update(cqrs_revision=F("cqrs_revision") + 1, cqrs_updated=timezone.now(), **values)
    correlation = current_correlation_id()
    events = [
        pending.PendingEvent(
            signal=SignalType.SAVE,
            model=model,
            pk=pk,
            using=using,
            revision=revision,
            outbox_id=outbox_id,
            correlation_id=correlation,
            meta=audit.merged({}),
        )
        for pk, revision, outbox_id in rows.written
    ]
    pending.add_many(events, dispatch.publish_committed)
    return int(count)


def _record_in_bulk(model: Any, using: str, pks: list[Any]) -> bool:
    """Fast path of ``bulk_update``: write the outbox rows with one INSERT ... SELECT per chunk,
    when what is captured does not depend on the row. Returns False when it does not apply."""
    if not (store.enabled() and model.CQRS_PRODUCE) or hooks.overridden(model, "is_sync_instance"):
        return False
    data = recording.constant_data(model)
    if data is None:
        return False
    pk_field = model._meta.pk
    meta = audit.merged({})
    events = [
        pending.PendingEvent(
            signal=SignalType.SAVE,
            model=model,
            pk=pk_field.to_python(pk_text),
            using=using,
            revision=revision,
            outbox_id=outbox_id,
            meta=meta,
        )
        for outbox_id, pk_text, revision in recording.record_rows(model, using, pks, data)
    ]
    pending.add_many(events, dispatch.publish_committed)
    return True


def _has_other_receivers(signal: Any, sender: Any) -> bool:
    """Whether anything but dj_cqrs listens to ``signal`` for ``sender``."""
    ours = dispatch_uid(sender)
    wanted = {dispatcher.NONE_ID, dispatcher._make_id(sender)}  # type: ignore[attr-defined]
    for entry in signal.receivers:
        receiver_key, sender_key = entry[0]
        if sender_key in wanted and receiver_key != ours:
            return True
    return False
