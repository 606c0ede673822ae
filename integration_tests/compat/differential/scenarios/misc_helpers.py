"""Small helpers of django-cqrs kept as they were (issue 10, gap 9)."""

from __future__ import annotations

import datetime
import io
import os
import queue
import tempfile
from typing import Any

from django.core.management import call_command
from django.utils import timezone
from dmaster.models import Author
from dreplica.models import AuthorRef

from scenarios._base import outcome

UPDATED = "2024-01-02T03:04:05+00:00"


def _command(name: str, *args: str) -> dict[str, Any]:
    out, err = io.StringIO(), io.StringIO()
    code: Any = 0
    try:
        call_command(name, *args, stdout=out, stderr=err)
    except SystemExit as exc:
        code = exc.code
    except Exception as exc:  # noqa: BLE001 - the exception is the observation
        code = type(exc).__name__
    return {"stdout": out.getvalue(), "stderr": err.getvalue().strip(), "exit": code}


def check_bulk_dump_of_no_rows() -> Any:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "dump")
        result = _command("cqrs_bulk_dump", "--cqrs-id", "diff_author", "-o", path)
        with open(path) as f:
            text = f.read()
    return {"file": text, "exit": result["exit"]}


def check_bulk_dump_of_two_rows() -> Any:
    Author.objects.create(name="a")
    Author.objects.create(name="b")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "dump")
        result = _command("cqrs_bulk_dump", "--cqrs-id", "diff_author", "-o", path)
        with open(path) as f:
            text = f.read()
    lines = text.split("\n")
    return {"lines": len(lines), "first": lines[0], "ends_with_newline": text.endswith("\n"), "exit": result["exit"]}


def check_diff_master_filter_matches_nothing() -> Any:
    with timezone.override(datetime.timezone.utc):
        Author.objects.create(name="a")
    return {
        "no_match": _command("cqrs_diff_master", "--cqrs-id", "diff_author", "--filter", '{"name": "zzz"}'),
    }


def check_diff_master_empty_table() -> Any:
    return _command("cqrs_diff_master", "--cqrs-id", "diff_author")


def check_deleted_diff_replica_filter_matches_nothing() -> Any:
    AuthorRef.objects.create(id=1, name="a", cqrs_revision=0, cqrs_updated=UPDATED)
    return {
        "no_match": _command("cqrs_deleted_diff_replica", "--cqrs-id", "diff_author", "--filter", '{"name": "zzz"}'),
    }


def check_deleted_diff_replica_empty_table() -> Any:
    return _command("cqrs_deleted_diff_replica", "--cqrs-id", "diff_author")


def check_delay_queue_put_when_full() -> Any:
    from dj_cqrs.delay import DelayMessage, DelayQueue

    q = DelayQueue(max_size=2)
    now = timezone.now()
    for tag in (1, 2):
        q.put(DelayMessage(tag, None, now + datetime.timedelta(seconds=tag)))
    try:
        q.put(DelayMessage(3, None, now))
        third: Any = "accepted"
    except queue.Full:
        third = "queue.Full"
    return {"third": third, "size": q.qsize(), "full": q.full(), "first": q.get().delivery_tag}


def check_delay_queue_get_ready() -> Any:
    from dj_cqrs.delay import DelayMessage, DelayQueue

    q = DelayQueue()
    now = timezone.now()
    q.put(DelayMessage(1, None, now + datetime.timedelta(hours=1)))
    q.put(DelayMessage(2, None, now - datetime.timedelta(seconds=1)))
    q.put(DelayMessage(3, None, now - datetime.timedelta(seconds=2)))
    return {"ready": [m.delivery_tag for m in q.get_ready()], "left": q.qsize()}


def check_utils_public_names() -> Any:
    import dj_cqrs.utils as utils

    names = [
        "ContextDecorator", "DB_VENDOR_PG", "SUPPORTED_TIMEOUT_DB_VENDORS", "UUID", "apply_query_timeouts",
        "bulk_relate_cqrs_serialization", "date", "datetime", "defaultdict", "get_delay_queue_max_size",
        "get_json_valid_value", "get_message_expiration_dt", "get_messages_prefetch_count_per_worker",
        "install_last_query_capturer", "logger", "logging", "settings", "timedelta", "timezone", "transaction",
    ]
    found: dict[str, Any] = {name: type(getattr(utils, name, None)).__name__ for name in names}
    found["DB_VENDOR_PG"] = getattr(utils, "DB_VENDOR_PG", None)
    found["SUPPORTED_TIMEOUT_DB_VENDORS"] = sorted(getattr(utils, "SUPPORTED_TIMEOUT_DB_VENDORS", ()))
    found["datetime is the class"] = getattr(utils, "datetime", None) is datetime.datetime
    found["logger name"] = getattr(getattr(utils, "logger", None), "name", None)
    return found


def check_retry_delay_is_the_configured_int() -> Any:
    from dreplica.models import BookRef, KwargsHandler

    return {
        "model": [BookRef.get_cqrs_retry_delay(n) for n in (0, 3)],
        "model_type": type(BookRef.get_cqrs_retry_delay(0)).__name__,
        "handler_type": type(KwargsHandler.get_cqrs_retry_delay(1)).__name__,
        "should_retry": [BookRef.should_retry_cqrs(n) for n in (0, 2, 3)],
        "outcome": outcome(lambda: BookRef.get_cqrs_retry_delay(0)),
    }
