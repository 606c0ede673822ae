"""Overridden ``to_cqrs_dict``, ``get_tracked_fields_data`` and ``cqrs_sync`` (issue 10, gap 6)."""

from __future__ import annotations

import io
import os
import tempfile
from typing import Any
from unittest import mock

from django.core.management import call_command
from dmaster.models import GADGET_SYNCS, Gadget, Picky

from scenarios._base import captured_produce, documented, payload_view


def _quiet_call(*args: Any, **kwargs: Any) -> None:
    with mock.patch("sys.stdout", io.StringIO()), mock.patch("sys.stderr", io.StringIO()):
        call_command(*args, stdout=io.StringIO(), stderr=io.StringIO(), **kwargs)


def check_hooks_used_by_save() -> Any:
    with captured_produce() as sent:
        obj = Gadget.objects.create(name="a")
        obj.name = "b"
        obj.save()
    return {"tracked": obj.get_tracked_fields_data(), "payloads": [payload_view(p) for p in sent]}


def check_hooks_used_by_instance_sync() -> Any:
    obj = Gadget.objects.create(name="a")
    GADGET_SYNCS.clear()
    with captured_produce() as sent:
        result = obj.cqrs_sync(queue="q1")
    return {"returned": result, "syncs": list(GADGET_SYNCS), "payloads": [payload_view(p) for p in sent]}


def check_hooks_used_by_bulk_dump() -> Any:
    Gadget.objects.create(name="a")
    Gadget.objects.create(name="b")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "dump.jsonl")
        _quiet_call("cqrs_bulk_dump", cqrs_id="diff_gadget", output=path)
        with open(path) as fh:
            lines = fh.read().splitlines()
    import json

    return {"first": lines[0], "rows": sorted((json.loads(line) for line in lines[1:]), key=lambda r: r["id"])}


def check_hooks_used_by_sync_command() -> Any:
    Gadget.objects.create(name="a")
    Gadget.objects.create(name="b", hidden=True)
    GADGET_SYNCS.clear()
    with captured_produce() as sent:
        _quiet_call("cqrs_sync", cqrs_id="diff_gadget", filter="{}", queue="q1")
    return {
        "syncs": sorted(GADGET_SYNCS),
        "payloads": sorted((payload_view(p) for p in sent), key=lambda p: p["pk"]),
    }


def check_hooks_used_by_diff_sync() -> Any:
    first = Gadget.objects.create(name="a")
    Gadget.objects.create(name="b")
    GADGET_SYNCS.clear()
    with captured_produce() as sent, mock.patch("sys.stdin", io.StringIO(f"diff_gadget,2024-01-01 00:00:00+00:00,q1\n[{first.pk}]\n")):
        _quiet_call("cqrs_diff_sync")
    return {"syncs": sorted(GADGET_SYNCS), "payloads": [payload_view(p) for p in sent]}


def check_hooks_used_by_admin_action() -> Any:
    from scenarios.master_admin import run_action

    Gadget.objects.create(name="a")
    Gadget.objects.create(name="b", hidden=True)
    GADGET_SYNCS.clear()
    with captured_produce() as sent:
        shown = run_action(Gadget, Gadget.objects.order_by("pk"))
    return {
        "messages": shown,
        "syncs": sorted(GADGET_SYNCS),
        "payloads": sorted((payload_view(p) for p in sent), key=lambda p: p["pk"]),
    }


@documented("`cqrs_sync()` returns True when nothing is sent")
def check_cqrs_sync_of_filtered_instance() -> Any:
    obj = Picky.objects.create(name="a", visible=False)
    with captured_produce() as sent:
        result = obj.cqrs_sync()
    return {"returned": result, "payloads": len(sent)}
