"""Python API details code written against django-cqrs sees (issue 10, audit entries 6-10)."""

from __future__ import annotations

import datetime
import json
from typing import Any

from django.db import transaction
from django.utils import timezone
from dmaster.models import Author, NarrowCounter, Picky, Ticket
from dreplica.models import AuthorRef

from scenarios._base import captured_produce, documented, logged, payload_view

UPDATED = "2024-01-02 03:04:05+00:00"


def check_to_cqrs_dict_key_order() -> Any:
    author = Author.objects.create(name="a")
    ticket = Ticket.objects.create(number=7, title="t")
    narrow = NarrowCounter.objects.create(name="n", hits=3)
    return {type(obj).__name__: list(obj.to_cqrs_dict()) for obj in (author, ticket, narrow)}


def check_published_instance_data_key_order() -> Any:
    with captured_produce() as sent:
        Author.objects.create(name="a")
        Ticket.objects.create(number=7, title="t")
    return [list(payload.instance_data) for payload in sent]


def check_missing_pk_log_text() -> Any:
    with logged() as lines:
        saved = AuthorRef.cqrs_save({"name": "x", "cqrs_revision": 0, "cqrs_updated": UPDATED})
        deleted = AuthorRef.cqrs_delete({"cqrs_revision": 0, "cqrs_updated": UPDATED})
    return {"saved": saved, "deleted": deleted, "logged": lines, "rows": AuthorRef.objects.count()}


@documented("Logged at WARNING, same text.")
def check_duplicate_log_level() -> Any:
    AuthorRef.cqrs_save({"id": 1, "name": "x", "cqrs_revision": 2, "cqrs_updated": UPDATED})
    with logged() as lines:
        again = AuthorRef.cqrs_save({"id": 1, "name": "x", "cqrs_revision": 2, "cqrs_updated": UPDATED})
    return {"returned": type(again).__name__, "logged": lines}


def check_app_verbose_name() -> Any:
    from django.apps import apps

    return apps.get_app_config("dj_cqrs").verbose_name


def check_delay_queue_get_ready_is_lazy() -> Any:
    from dj_cqrs.delay import DelayMessage, DelayQueue

    q = DelayQueue()
    now = timezone.now()
    for tag, seconds in ((1, -3), (2, -2), (3, 3600)):
        q.put(DelayMessage(tag, None, now + datetime.timedelta(seconds=seconds)))
    ready = q.get_ready()
    before = q.qsize()
    first = next(ready).delivery_tag
    after_first = q.qsize()
    rest = [m.delivery_tag for m in ready]
    return {"before": before, "first": first, "after_first": after_first, "rest": rest, "left": q.qsize()}


def check_delay_queue_refuses_max_size_zero() -> Any:
    from dj_cqrs.delay import DelayQueue

    found: dict[str, Any] = {}
    for size in (0, -1):
        try:
            DelayQueue(max_size=size)
            found[str(size)] = "accepted"
        except AssertionError as exc:
            found[str(size)] = f"AssertionError: {exc}"
    return found


def check_from_message_missing_key_is_a_key_error() -> Any:
    from dj_cqrs.dataclasses import TransportPayload

    caught = {}
    for key in ("signal_type", "cqrs_id", "instance_data"):
        body = {"signal_type": "SAVE", "cqrs_id": "diff_author", "instance_data": {}, "instance_pk": 1}
        del body[key]
        try:
            TransportPayload.from_message(body)
            caught[key] = "accepted"
        except KeyError:
            caught[key] = "KeyError caught"
    return caught


@documented("`from_message()` validates the body")
def check_from_message_unknown_signal_type() -> Any:
    from dj_cqrs.dataclasses import TransportPayload

    try:
        payload = TransportPayload.from_message(
            {"signal_type": "WHAT", "cqrs_id": "diff_author", "instance_data": {}, "instance_pk": 1}
        )
    except ValueError:
        return "ValueError caught"
    return {"accepted": str(payload.signal_type)}


@documented("`signal_type` is a `SignalType` member")
def check_signal_type_is_a_str_enum() -> Any:
    from dj_cqrs.constants import SignalType

    with captured_produce() as sent:
        Author.objects.create(name="a")
    [payload] = sent
    return {
        "equals SAVE": payload.signal_type == "SAVE",
        "equals constant": payload.signal_type == SignalType.SAVE,
        "json": json.dumps({"s": payload.signal_type}),
        "exact str type": type(payload.signal_type) is str,
        "repr": repr(payload.signal_type),
    }


@documented("`cqrs_revision` must be an integer, whatever the row's state")
def check_string_revision_creates_the_row() -> Any:
    created = AuthorRef.cqrs_save({"id": 8, "name": "x", "cqrs_revision": "0", "cqrs_updated": UPDATED})
    return {"created": created is not None, "rows": AuthorRef.objects.count()}


@documented("It returns False (code doing `if not obj.cqrs_sync(): ...` now sees every filtered object)")
def check_cqrs_sync_of_a_filtered_instance() -> Any:
    hidden = Picky.objects.create(name="hidden", visible=False)
    with captured_produce() as sent:
        returned = hidden.cqrs_sync()
    return {"returned": returned, "sent": len(sent)}


@documented("Each save asks `is_sync_instance()`")
def check_is_sync_instance_of_the_first_save_decides() -> Any:
    with captured_produce() as sent, transaction.atomic():
        picky = Picky.objects.create(name="hidden at first", visible=False)
        picky.visible = True
        picky.save()
    filtered_first = [payload_view(p)["instance_data"]["name"] for p in sent]
    with captured_produce() as sent, transaction.atomic():
        picky = Picky.objects.create(name="shown at first")
        picky.visible = False
        picky.save()
    shown_first = [payload_view(p)["instance_data"]["visible"] for p in sent]
    return {"filtered, then shown": filtered_first, "shown, then filtered": shown_first}
