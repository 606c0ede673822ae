"""Admin integration: the "Synchronize selected ... via CQRS" action for master models."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.db.models import QuerySet

from dj_cqrs.exceptions import PublishFailed


class CQRSAdminMasterSyncMixin:
    """Add to a ``ModelAdmin`` of a master model: adds the ``sync_items`` action."""

    def get_actions(self, request: Any, action_location: Any = None) -> Any:
        # Django 6.1 passes ``action_location`` (change list or change form) and warns about
        # overrides without it; older versions call ``get_actions(request)`` for the change list.
        if action_location is None:
            actions = super().get_actions(request)  # type: ignore[misc]
            action = self.get_action("sync_items")  # type: ignore[attr-defined]
        else:
            actions = super().get_actions(request, action_location=action_location)  # type: ignore[misc]
            action = self.get_action("sync_items", action_location)  # type: ignore[attr-defined]
        if action is not None:  # None where Django 6.1 does not offer it (the change form)
            actions["sync_items"] = action
        return actions

    def _cqrs_sync_queryset(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        """Override to add ``select_related``/``prefetch_related`` for the sync."""
        return queryset

    #: Rows read and published per batch by the action.
    cqrs_sync_batch_size = 1000

    def sync_items(self, request: Any, queryset: QuerySet[Any]) -> None:
        """Publish the selected rows as SYNC messages, one query and one publish per batch."""
        from dj_cqrs.master.publisher import instance_pk, publish
        from dj_cqrs.sync import keyset, resync

        requested: list[Any] | None = None
        if not isinstance(queryset, QuerySet):  # instances given directly (not via the admin UI)
            items = list(queryset)
            if not items:
                return
            requested = [item.pk for item in items]
            queryset = type(items[0])._default_manager.filter(pk__in=requested)
        model = queryset.model
        ok: list[str] = []
        failed: list[str] = []
        qs = model.relate_cqrs_serialization(self._cqrs_sync_queryset(queryset))
        for rows in keyset.pk_batches(qs, self.cqrs_sync_batch_size):
            payloads, _ = resync.sync_payloads(model, rows)
            sent = {payload.instance_pk for payload in payloads}
            published = [str(row.pk) for row in rows if instance_pk(row.pk) in sent]
            failed.extend(str(row.pk) for row in rows if instance_pk(row.pk) not in sent)
            try:
                publish(payloads)
            except PublishFailed:
                failed.extend(published)
            else:
                ok.extend(published)
        if requested is not None:
            seen = set(ok) | set(failed)
            failed.extend(str(pk) for pk in requested if str(pk) not in seen)  # gone meanwhile
        if ok:
            self.message_user(request, f"{len(ok)} successfully synced.", messages.SUCCESS)  # type: ignore[attr-defined]
        if failed:
            self.message_user(  # type: ignore[attr-defined]
                request, f"{len(failed)} failed to sync: {', '.join(failed)}.", messages.ERROR
            )

    sync_items.short_description = "Synchronize selected %(verbose_name_plural)s via CQRS"  # type: ignore[attr-defined]
