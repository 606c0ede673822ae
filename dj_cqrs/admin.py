"""Admin integration: the "Synchronize selected ... via CQRS" action for master models."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.contrib.admin.options import IS_POPUP_VAR
from django.db.models import QuerySet
from django.utils.translation import gettext_lazy

from dj_cqrs.exceptions import PublishFailed
from dj_cqrs.master import hooks
from dj_cqrs.master.payloads import instance_pk
from dj_cqrs.master.publisher import publish
from dj_cqrs.sync import keyset, resync


class CQRSAdminMasterSyncMixin:
    """Add to a ``ModelAdmin`` of a master model: adds the ``sync_items`` action (unless the
    admin disables actions with ``actions = None``)."""

    def get_actions(self, request: Any, action_location: Any = None) -> Any:
        # Django 6.1 passes ``action_location`` (change list or change form) and warns about
        # overrides without it; older versions call ``get_actions(request)`` for the change list.
        if action_location is None:
            actions = super().get_actions(request)  # type: ignore[misc]
        else:
            actions = super().get_actions(request, action_location=action_location)  # type: ignore[misc]
        if self.actions is None or IS_POPUP_VAR in request.GET:  # type: ignore[attr-defined]
            return actions  # actions are off on this page: Django offers none
        if action_location is None:
            action = self.get_action("sync_items")  # type: ignore[attr-defined]
        else:
            action = self.get_action("sync_items", action_location)  # type: ignore[attr-defined]
        if action is not None:  # None where Django 6.1 does not offer it (the change form)
            actions.setdefault("sync_items", action)
        return actions

    def _cqrs_sync_queryset(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        """Override to add ``select_related``/``prefetch_related`` for the sync."""
        return queryset

    #: Rows read and published per batch by the action.
    cqrs_sync_batch_size = 1000

    def sync_items(self, request: Any, queryset: QuerySet[Any]) -> None:
        """Publish the selected rows as SYNC messages (one query and one publish per batch; a model
        that overrides ``cqrs_sync()`` gets it called per row) and report the outcome in one
        message: ``"<n> successfully synced. <m> failed: [<the objects not synced>]"``."""
        given: list[Any] | None = None
        if isinstance(queryset, QuerySet):
            total = queryset.count()
            selected = queryset
        else:  # instances given directly (not via the admin UI)
            given = list(queryset)
            total = len(given)
            selected = type(given[0])._default_manager.filter(pk__in=[item.pk for item in given]) if given else None
        not_synced: list[Any] = []
        synced: set[Any] = set()
        if selected is not None:
            model = selected.model
            qs = model.relate_cqrs_serialization(self._cqrs_sync_queryset(selected))
            sync_batch = _sync_each if hooks.overrides(model, "cqrs_sync") else _sync_batch
            for rows in keyset.pk_batches(qs, self.cqrs_sync_batch_size):
                done = sync_batch(model, rows)
                synced.update(done)
                not_synced.extend(row for row in rows if row.pk not in done)
        if given is not None:  # objects gone meanwhile were not synced
            seen = synced | {row.pk for row in not_synced}
            not_synced.extend(item for item in given if item.pk not in seen)
        self.message_user(  # type: ignore[attr-defined]
            request, f"{total - len(not_synced)} successfully synced. {len(not_synced)} failed: {not_synced}"
        )

    sync_items.short_description = gettext_lazy(  # type: ignore[attr-defined]
        "Synchronize selected %(verbose_name_plural)s via CQRS"
    )


def _sync_batch(model: Any, rows: list[Any]) -> set[Any]:
    """Publish one batch of rows; the primary keys of those published."""
    payloads, _ = resync.sync_payloads(model, rows)
    try:
        publish(payloads)
    except PublishFailed:
        return set()
    sent = {payload.instance_pk for payload in payloads}
    return {row.pk for row in rows if instance_pk(row.pk) in sent}


def _sync_each(model: Any, rows: list[Any]) -> set[Any]:
    """The model's own ``cqrs_sync()`` for each row; the primary keys it returned True for."""
    done: set[Any] = set()
    for row in rows:
        try:
            sent = row.cqrs_sync()
        except PublishFailed:  # reported to the user as not synced
            sent = False
        if sent:
            done.add(row.pk)
    return done


if apps.models_ready:  # imported by the admin's autodiscovery (not before Django is set up)
    from dj_cqrs.webhooks.admin import register as _register_webhooks

    _register_webhooks()  # webhook subscriptions and parked deliveries

from dj_cqrs.ops import admin as _ops_admin  # noqa: E402,F401,I001 - registers the outbox, dead letters, tombstones and inbox pages
