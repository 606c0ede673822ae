"""Registers the ops admin pages (imported by ``dj_cqrs.admin``, which Django's admin autodiscovery
loads): the outbox, the tombstones with the dead letters' page, the events' inbox."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.contrib import admin
from django.template import engines
from django.urls import path

from dj_cqrs.ops.dead_letter_admin import DeadLetterViews
from dj_cqrs.ops.outbox_admin import OutboxEventAdmin

_TOMBSTONE_LIST = """{% extends "admin/change_list.html" %}
{% block object-tools-items %}<li><a href="dead-letters/">Dead letters</a></li>{{ block.super }}{% endblock %}
"""


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Rows written by dj_cqrs: never added or edited by hand."""

    def has_add_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False


class TombstoneAdmin(ReadOnlyAdmin):
    """A replica's deletions (read-only, deletable) and, beside them, the dead letters' page."""

    list_display = ("cqrs_id", "object_pk", "revision", "deleted_at", "recorded_at")
    list_filter = ("cqrs_id",)
    search_fields = ("=object_pk",)
    ordering = ("-recorded_at",)

    @property
    def change_list_template(self) -> Any:  # type: ignore[override]
        return engines["django"].from_string(_TOMBSTONE_LIST)

    def get_urls(self) -> list[Any]:
        views = DeadLetterViews(self)
        opts = self.model._meta
        return [
            path(
                "dead-letters/",
                self.admin_site.admin_view(views.page),
                name=f"{opts.app_label}_{opts.model_name}_dead_letters",
            ),
            *super().get_urls(),
        ]


class InboxEntryAdmin(ReadOnlyAdmin):
    """Domain events the handlers handled (read-only)."""

    list_display = ("handled_at", "handler", "name", "key", "seq", "status", "event_id")
    list_filter = ("handler", "status", "name")
    search_fields = ("=event_id", "=key")
    ordering = ("-handled_at",)

    def has_delete_permission(self, request: Any, obj: Any = None) -> bool:
        return False


def register(site: admin.AdminSite = admin.site) -> None:
    """Register the pages on ``site`` (the default admin site: done on import once Django's models
    are loaded, as by the admin's autodiscovery)."""
    for name, model_admin in (
        ("OutboxEvent", OutboxEventAdmin),
        ("Tombstone", TombstoneAdmin),
        ("InboxEntry", InboxEntryAdmin),
    ):
        model = apps.get_model("dj_cqrs", name)
        if not site.is_registered(model):
            site.register(model, model_admin)


if apps.models_ready:  # imported by the admin's autodiscovery (not before Django is set up)
    register()

__all__ = ["InboxEntryAdmin", "OutboxEventAdmin", "TombstoneAdmin", "register"]
