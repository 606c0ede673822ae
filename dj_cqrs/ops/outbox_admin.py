"""Admin of the outbox (``OutboxEvent``): pending, failed and published events with their age and
last error; actions "publish now" (the normal claim-and-publish path), "retry" (reset the failure
count) and Django's "delete" (with its confirmation page).

Rows are read-only. The actions need the ``change`` permission (``delete``: the ``delete``
permission) and each is recorded in the admin log.

With several databases holding the outbox table (master models routed to more than one), the
``database`` filter chooses which one the list, the detail pages and the actions work on (by
default the one the router gives for ``OutboxEvent``).
"""

from __future__ import annotations

import logging
import urllib.parse
from collections import defaultdict
from typing import Any

from django.contrib import admin, messages
from django.db import connections
from django.db.models import QuerySet
from django.utils import timezone

from dj_cqrs.exceptions import CqrsError
from dj_cqrs.master.outbox import maintenance, publishing
from dj_cqrs.ops import admin_log

logger = logging.getLogger("django-cqrs.admin")


class StateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: Any, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("pending", "Pending"),
            ("failed", "Failed (pending, attempted)"),
            ("published", "Published"),
        ]

    def queryset(self, request: Any, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value == "pending":
            return queryset.filter(published_at__isnull=True)
        if value == "failed":
            return queryset.filter(published_at__isnull=True, attempts__gt=0)
        if value == "published":
            return queryset.filter(published_at__isnull=False)
        return queryset


def selected_database(request: Any) -> str | None:
    """The outbox database the request names with the ``database`` filter, also on a detail or
    action page reached from a filtered list (``_changelist_filters``); None: the default one."""
    value = request.GET.get(DatabaseFilter.parameter_name)
    if value is None:
        preserved = urllib.parse.parse_qs(request.GET.get("_changelist_filters", ""))
        value = (preserved.get(DatabaseFilter.parameter_name) or [None])[0]
    return value if value in connections.settings else None


class DatabaseFilter(admin.SimpleListFilter):
    """Which database's outbox is shown; offered when more than one has the outbox table."""

    title = "database"
    parameter_name = "database"

    def lookups(self, request: Any, model_admin: Any) -> list[tuple[str, str]]:
        from dj_cqrs.master.relay import outbox_databases

        aliases = outbox_databases()
        return [(alias, alias) for alias in aliases] if len(aliases) > 1 else []

    def has_output(self) -> bool:
        return len(self.lookup_choices) > 1

    def queryset(self, request: Any, queryset: QuerySet[Any]) -> QuerySet[Any]:
        alias = selected_database(request)
        return queryset.using(alias) if alias else queryset


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


class OutboxEventAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = (
        "id",
        "cqrs_id",
        "signal_type",
        "object_pk",
        "revision",
        "created_at",
        "age",
        "state",
        "attempts",
        "error",
    )
    list_filter = (DatabaseFilter, StateFilter, "cqrs_id", "signal_type")
    search_fields = ("=object_pk", "cqrs_id")
    ordering = ("-id",)
    actions = ("publish_now", "retry")
    list_per_page = 100
    show_full_result_count = False

    def get_queryset(self, request: Any) -> QuerySet[Any]:
        queryset = super().get_queryset(request)
        alias = selected_database(request)
        return queryset.using(alias) if alias else queryset

    def get_readonly_fields(self, request: Any, obj: Any = None) -> list[str]:
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request: Any) -> bool:
        return False

    @admin.display(description="age")
    def age(self, obj: Any) -> str:
        """Since the event was recorded (pending), or how long it waited (published)."""
        end = obj.published_at or timezone.now()
        return _age((end - obj.created_at).total_seconds())

    @admin.display(description="state")
    def state(self, obj: Any) -> str:
        if obj.published_at is not None:
            return "published"
        return "failed" if obj.attempts else "pending"

    @admin.display(description="last error")
    def error(self, obj: Any) -> str:
        text: str = obj.last_error or ""
        return text if len(text) <= 120 else text[:117] + "..."

    @admin.action(description="Publish selected pending events now", permissions=["change"])
    def publish_now(self, request: Any, queryset: QuerySet[Any]) -> None:
        """Publish the selected pending rows through the publisher's claim path (rows another
        publisher holds or published meanwhile are skipped), in id order."""
        by_db: dict[str, list[int]] = defaultdict(list)
        for pk in (
            queryset.filter(published_at__isnull=True).order_by("id").values_list("id", flat=True)
        ):
            by_db[queryset.db].append(pk)
        published = 0
        for using, ids in by_db.items():
            try:
                published += publishing.publish_items(using, [(pk, None) for pk in ids])
            except CqrsError as exc:
                maintenance.note_failure(using, ids, exc)
                admin_log.record(
                    request, self.model, f"Publish now of {_events(len(ids))} failed: {exc}"
                )
                self.message_user(request, f"Publishing failed: {exc}", messages.ERROR)
                return
        admin_log.record(
            request, self.model, f"Published {_events(published)} now (ids {_ids(by_db)})"
        )
        skipped = sum(len(ids) for ids in by_db.values()) - published
        note = f" ({skipped} already published by another publisher)" if skipped > 0 else ""
        self.message_user(
            request, f"{_events(published, outbox=False)} published{note}.", messages.SUCCESS
        )

    @admin.action(
        description="Retry selected pending events (reset their failures)", permissions=["change"]
    )
    def retry(self, request: Any, queryset: QuerySet[Any]) -> None:
        """Reset ``attempts`` and ``last_error`` of the selected pending rows: the relay and the
        sweep take them as new."""
        pending = queryset.filter(published_at__isnull=True)
        ids = list(pending.values_list("id", flat=True))
        reset = pending.update(attempts=0, last_error="")
        admin_log.record(
            request,
            self.model,
            f"Reset the failures of {_events(reset)} (ids {_ids({'': ids})})",
        )
        self.message_user(
            request, f"{_events(reset, outbox=False)} will be retried.", messages.SUCCESS
        )


def _events(count: int, *, outbox: bool = True) -> str:
    """``1 outbox event``, ``2 outbox events`` (``1 event`` without ``outbox``)."""
    return f"{count} {'outbox ' if outbox else ''}event{'' if count == 1 else 's'}"


def _ids(by_db: dict[str, list[int]]) -> str:
    ids = [pk for values in by_db.values() for pk in values]
    shown = ", ".join(str(pk) for pk in ids[:20])
    return shown + (f" and {len(ids) - 20} more" if len(ids) > 20 else "")


__all__ = ["DatabaseFilter", "OutboxEventAdmin", "StateFilter", "selected_database"]
