"""Settings changed at run time take effect on the next read (issue 10, gap 7)."""

from __future__ import annotations

import contextlib
import copy
import datetime
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.test import override_settings
from django.utils import timezone
from dmaster.models import Author
from dreplica.models import BookRef

from scenarios._base import captured_produce


@contextlib.contextmanager
def _restored() -> Iterator[None]:
    saved = copy.deepcopy(settings.CQRS)
    try:
        yield
    finally:
        settings.CQRS.clear()
        settings.CQRS.update(saved)


def _replica_view() -> dict[str, Any]:
    return {
        "retry_2": BookRef.should_retry_cqrs(2),
        "retry_5": BookRef.should_retry_cqrs(5),
        "delay": BookRef.get_cqrs_retry_delay(0),
        "delay_type": type(BookRef.get_cqrs_retry_delay(0)).__name__,
    }


def _ttl_of_next_save() -> Any:
    with captured_produce() as sent:
        Author.objects.create(name="a")
    expires = sent[-1].expires
    if expires is None:
        return None
    return round((expires - timezone.now()) / datetime.timedelta(seconds=10)) * 10


def check_retry_settings_assigned_in_place() -> Any:
    with _restored():
        before = _replica_view()
        settings.CQRS["replica"]["CQRS_MAX_RETRIES"] = 10
        settings.CQRS["replica"]["CQRS_RETRY_DELAY"] = 7
        after = _replica_view()
        settings.CQRS["replica"]["CQRS_MAX_RETRIES"] = None
        forever = BookRef.should_retry_cqrs(10**6)
    return {"before": before, "after": after, "forever": forever, "restored": _replica_view()}


def check_replica_section_replaced_in_place() -> Any:
    with _restored():
        BookRef.should_retry_cqrs(0)
        settings.CQRS["replica"] = {"CQRS_MAX_RETRIES": 1, "CQRS_RETRY_DELAY": 9}
        return _replica_view()


def check_retry_settings_override_settings() -> Any:
    before = _replica_view()
    new = copy.deepcopy(settings.CQRS)
    new["replica"].update({"CQRS_MAX_RETRIES": 4, "CQRS_RETRY_DELAY": 1})
    with override_settings(CQRS=new):
        inside = _replica_view()
    return {"before": before, "inside": inside, "after": _replica_view()}


def check_master_ttl_assigned_in_place() -> Any:
    with _restored():
        before = _ttl_of_next_save()
        settings.CQRS["master"]["CQRS_MESSAGE_TTL"] = 600
        after = _ttl_of_next_save()
    return {"before": before, "after": after, "restored": _ttl_of_next_save()}


def check_master_ttl_override_settings() -> Any:
    new = copy.deepcopy(settings.CQRS)
    new["master"]["CQRS_MESSAGE_TTL"] = 1200
    with override_settings(CQRS=new):
        inside = _ttl_of_next_save()
    return {"inside": inside, "after": _ttl_of_next_save()}
