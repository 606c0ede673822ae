"""``CQRSAdminMasterSyncMixin`` (issue 10, admin part of gap 9)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth.models import AnonymousUser
from django.contrib.messages.storage.fallback import FallbackStorage
from django.test import RequestFactory
from dmaster.models import Author, Picky

from dj_cqrs.admin import CQRSAdminMasterSyncMixin
from scenarios._base import captured_produce, documented


class _Superuser(AnonymousUser):
    is_active = True
    is_staff = True
    is_superuser = True

    def has_perm(self, perm: str, obj: Any = None) -> bool:
        return True


def _request(path: str = "/admin/") -> Any:
    request = RequestFactory().post(path)
    request.user = _Superuser()
    request.session = {}
    request._messages = FallbackStorage(request)
    return request


def _admin(model: Any, **attrs: Any) -> Any:
    cls = type("SyncAdmin", (CQRSAdminMasterSyncMixin, admin.ModelAdmin), attrs)
    return cls(model, admin.AdminSite())


def run_action(model: Any, queryset: Any, **attrs: Any) -> list[tuple[int, str]]:
    """Run the ``sync_items`` action as the admin changelist does; the messages it left."""
    model_admin = _admin(model, **attrs)
    request = _request()
    func, name, _ = model_admin.get_actions(request)["sync_items"]
    func(model_admin, request, queryset)
    return [(m.level, m.message) for m in request._messages]


def check_admin_actions_listed() -> Any:
    model_admin = _admin(Author)
    actions = model_admin.get_actions(_request())
    return {name: str(description) for name, (_, _, description) in actions.items()}


def check_admin_actions_none() -> Any:
    model_admin = _admin(Author, actions=None)
    return sorted(model_admin.get_actions(_request()))


def check_admin_actions_own_list() -> Any:
    def shout(modeladmin: Any, request: Any, queryset: Any) -> None:
        """Shout."""

    model_admin = _admin(Author, actions=[shout])
    first = list(model_admin.get_actions(_request()))
    second = list(model_admin.get_actions(_request()))
    return {"first": first, "second": second}


def check_admin_actions_in_popup() -> Any:
    model_admin = _admin(Author)
    return sorted(model_admin.get_actions(_request("/admin/?_popup=1")))


def check_admin_action_choices() -> Any:
    model_admin = _admin(Author)
    return [str(label) for _, label in model_admin.get_action_choices(_request())]


def check_admin_sync_messages() -> Any:
    Author.objects.create(name="a")
    Author.objects.create(name="b")
    with captured_produce() as sent:
        shown = run_action(Author, Author.objects.order_by("pk"))
    return {"messages": shown, "payloads": len(sent)}


def check_admin_sync_messages_for_a_list() -> Any:
    first = Author.objects.create(name="a")
    second = Author.objects.create(name="b")
    Author.objects.filter(pk=second.pk).delete()
    with captured_produce():
        shown = run_action(Author, [first, second])
    return {"messages": shown}


def check_admin_sync_nothing_selected() -> Any:
    with captured_produce() as sent:
        shown = run_action(Author, Author.objects.none())
    return {"messages": shown, "payloads": len(sent)}


@documented("`cqrs_sync()` returns True when nothing is sent")
def check_admin_sync_filtered_rows() -> Any:
    Picky.objects.create(name="a", visible=False)
    Picky.objects.create(name="b")
    with captured_produce() as sent:
        shown = run_action(Picky, Picky.objects.order_by("pk"))
    return {"messages": shown, "payloads": len(sent)}
