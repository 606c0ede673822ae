"""``meta`` of master payloads: the signal type a sync passes to ``get_cqrs_meta()`` and
``master.meta_function``, and meta built from the final state of an object saved several times in
one transaction (issue 10, audit entries 1 and 2)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction
from django.test import override_settings
from dmaster.models import Author, Stamped

from scenarios._base import captured_produce, documented, payload_view


def check_meta_of_sync() -> Any:
    obj = Stamped.objects.create(name="a")
    with captured_produce() as sent:
        first = obj.cqrs_sync()
        second = obj.cqrs_sync(queue="q1")
    return {"returned": [first, second], "payloads": [payload_view(p) for p in sent]}


def _view(payload: Any) -> dict[str, Any]:
    """The payload without its revision (bumped once per save in a transaction by django-cqrs,
    once per transaction by ours: documented, compared elsewhere)."""
    view = payload_view(payload)
    view["instance_data"].pop("cqrs_revision", None)
    return view


def check_meta_saved_twice_in_atomic() -> Any:
    with captured_produce() as sent:
        with transaction.atomic():
            obj = Stamped.objects.create(name="first")
            obj.name = "second"
            obj.save()
    return [_view(p) for p in sent]


def check_meta_updated_three_times_in_atomic() -> Any:
    obj = Stamped.objects.create(name="a")
    with captured_produce() as sent:
        with transaction.atomic():
            obj.name = "b"
            obj.save()
            obj.status = "done"
            obj.save()
            obj.name = "c"
            obj.save()
    return [_view(p) for p in sent]


def check_meta_unchanged_by_the_later_save() -> Any:
    obj = Stamped.objects.create(name="a")
    with captured_produce() as sent:
        with transaction.atomic():
            obj.status = "x"
            obj.save()
            obj.save()
    return [_view(p) for p in sent]


def _with_meta_function(meta_function: Any) -> Any:
    cqrs = {**settings.CQRS, "master": {**settings.CQRS["master"], "meta_function": meta_function}}
    return override_settings(CQRS=cqrs)


def check_meta_function_kwargs() -> Any:
    calls: list[Any] = []

    def meta_function(**kwargs: Any) -> dict[str, Any]:
        data = kwargs["instance_data"]
        calls.append(
            {
                "keys": sorted(kwargs),
                "obj": type(kwargs["obj"]).__name__,
                "obj_name": kwargs["obj"].name,
                "signal_type": str(kwargs["signal_type"]),
                "data_name": data.get("name"),
            }
        )
        return {"sig": str(kwargs["signal_type"]), "name": data.get("name"), "obj_name": kwargs["obj"].name}

    with _with_meta_function(meta_function), captured_produce() as sent:
        with transaction.atomic():
            obj = Author.objects.create(name="first")
            obj.name = "second"
            obj.save()
        last_save_call = calls[-1]
        calls.clear()
        obj.cqrs_sync(queue="q1")
        obj.delete()
    return {
        "payloads": [_view(p) for p in sent],
        "last_save_call": last_save_call,
        "sync_and_delete_calls": calls,
    }


@documented("runs at each save of the object in the transaction")
def check_meta_hook_calls_in_a_transaction() -> Any:
    calls: list[str] = []

    def meta_function(**kwargs: Any) -> dict[str, Any]:
        calls.append(kwargs["instance_data"].get("name"))
        return {}

    with _with_meta_function(meta_function), captured_produce():
        with transaction.atomic():
            obj = Author.objects.create(name="first")
            obj.name = "second"
            obj.save()
    return calls
