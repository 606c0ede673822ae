"""Admin integration: the "Synchronize selected ... via CQRS" action for master models."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.db.models import QuerySet

from dj_cqrs.exceptions import PublishFailed


class CQRSAdminMasterSyncMixin:
    """Add to a ``ModelAdmin`` of a master model: adds the ``sync_items`` action."""

    def get_actions(self, request: Any) -> Any:
        actions = super().get_actions(request)  # type: ignore[misc]
        actions["sync_items"] = self.get_action("sync_items")  # type: ignore[attr-defined]
        return actions

    def _cqrs_sync_queryset(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        """Override to add ``select_related``/``prefetch_related`` for the sync."""
        return queryset

    def sync_items(self, request: Any, queryset: QuerySet[Any]) -> None:
        ok: list[str] = []
        failed: list[str] = []
        for item in self._cqrs_sync_queryset(queryset):
            try:
                synced = item.cqrs_sync()
            except PublishFailed:
                synced = False
            (ok if synced else failed).append(str(item.pk))
        if ok:
            self.message_user(request, f"{len(ok)} successfully synced.", messages.SUCCESS)  # type: ignore[attr-defined]
        if failed:
            self.message_user(  # type: ignore[attr-defined]
                request, f"{len(failed)} failed to sync: {', '.join(failed)}.", messages.ERROR
            )

    sync_items.short_description = "Synchronize selected %(verbose_name_plural)s via CQRS"  # type: ignore[attr-defined]
