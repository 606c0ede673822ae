"""Views of the audit middleware tests."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import path

from dj_cqrs import audit, events
from tests.apps.master_app.models import SimplestModel


def create(request: HttpRequest) -> HttpResponse:
    obj = SimplestModel.objects.create(name=request.GET.get("name", "x"))
    return HttpResponse(str(obj.pk))


def emit(request: HttpRequest) -> HttpResponse:
    return HttpResponse(events.emit("order.paid", 1, {"a": 1}))


def nothing(request: HttpRequest) -> HttpResponse:
    return HttpResponse(repr(audit.active()))


async def acreate(request: HttpRequest) -> HttpResponse:
    from asgiref.sync import sync_to_async

    obj = await sync_to_async(SimplestModel.objects.create)(name="async")
    return HttpResponse(str(obj.pk))


urlpatterns = [
    path("create/", create),
    path("emit/", emit),
    path("nothing/", nothing),
    path("acreate/", acreate),
]
