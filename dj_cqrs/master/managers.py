"""``Model.cqrs``: bulk operations on master models that still publish one event per row."""

from __future__ import annotations

from typing import Any, Iterable

from django.db import models, transaction
from django.db.models import F
from django.utils import timezone

from dj_cqrs.encoding import to_json_value
from dj_cqrs.master import tracking


class MasterManager(models.Manager):  # type: ignore[type-arg]
    """The ``cqrs`` manager of master models."""

    def bulk_create(self, objs: Iterable[Any], **kwargs: Any) -> list[Any]:  # type: ignore[override]
        """Django's ``bulk_create`` plus one SAVE event per created object.

        The objects must have primary keys after the insert (returned by the database, or set
        by the caller).
        """
        objs = list(objs)
        for obj in objs:
            obj.__dict__["_cqrs_bulk_previous"] = tracking.changes(obj, created=True)
        with transaction.atomic(using=self.db, savepoint=False):
            created = super().get_queryset().bulk_create(objs, **kwargs)
            self.model.call_post_bulk_create(created, using=self.db)  # type: ignore[attr-defined]
        return created

    def bulk_update(self, queryset: models.QuerySet[Any], **kwargs: Any) -> int:  # type: ignore[override]
        """Update every row of ``queryset`` with ``kwargs`` and publish one SAVE per row.

        Note the signature (django-cqrs's): a queryset and the values to set, not Django's
        ``bulk_update(objs, fields)``. ``previous_data`` holds every tracked value before the update.
        """
        model = self.model
        using = queryset.db
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
            instances: list[Any] = []
            for start in range(0, len(pks), 1000):
                instances.extend(base.filter(pk__in=pks[start : start + 1000]))
            model.call_post_update(  # type: ignore[attr-defined]
                instances, using=using, previous_data=previous if fields else None
            )
        return count
