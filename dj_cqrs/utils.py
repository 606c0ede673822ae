"""django-cqrs compatible helpers.

Besides its functions, django-cqrs's ``dj_cqrs.utils`` exposed the names it imported; they are
re-exported (the same objects) so that code importing them from here keeps working.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import defaultdict
from contextlib import ContextDecorator
from datetime import date, datetime, timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import router, transaction
from django.utils import timezone

from dj_cqrs.conf import cqrs_settings
from dj_cqrs.constants import DB_VENDOR_PG, SUPPORTED_TIMEOUT_DB_VENDORS
from dj_cqrs.core.payload import message_expiration
from dj_cqrs.encoding import to_json_value
from dj_cqrs.logger import install_last_query_capturer
from dj_cqrs.replica.timeouts import apply_query_timeout

logger = logging.getLogger("django-cqrs")

#: django-cqrs's per-thread state (``dj_cqrs.state.cqrs_state``), where its
#: ``bulk_relate_cqrs_serialization`` kept a cache; dj_cqrs keeps nothing there.
cqrs_state = threading.local()


def get_message_expiration_dt(message_ttl: int | None = None) -> datetime | None:
    """``now + ttl`` (``master.CQRS_MESSAGE_TTL`` when not given), None when messages never expire."""
    if message_ttl is not None:
        return message_expiration(message_ttl)
    return message_expiration()


def get_delay_queue_max_size() -> int | None:
    return cqrs_settings.replica.delay_queue_max_size  # type: ignore[no-any-return]


def get_messages_prefetch_count_per_worker() -> int:
    """How many unacknowledged messages one worker holds (twice its batch size, on RabbitMQ)."""
    return cqrs_settings.replica.prefetch_count  # type: ignore[no-any-return]


def get_json_valid_value(value: Any) -> Any:
    return to_json_value(value)


def apply_query_timeouts(model_cls: Any) -> None:
    apply_query_timeout(model_cls, router.db_for_write(model_cls))


class _BulkRelate(contextlib.ContextDecorator):
    """Kept for django-cqrs code. dj_cqrs always serializes the rows of one transaction with one
    query per model (through ``relate_cqrs_serialization``), so this block changes nothing."""

    def __init__(self, cqrs_id: str | None = None) -> None:
        self.cqrs_id = cqrs_id

    def __enter__(self) -> _BulkRelate:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


def bulk_relate_cqrs_serialization(cqrs_id: str | None = None) -> _BulkRelate:
    return _BulkRelate(cqrs_id)


__all__ = [
    "DB_VENDOR_PG",
    "SUPPORTED_TIMEOUT_DB_VENDORS",
    "UUID",
    "ContextDecorator",
    "apply_query_timeouts",
    "cqrs_state",
    "date",
    "datetime",
    "defaultdict",
    "install_last_query_capturer",
    "logger",
    "logging",
    "settings",
    "timedelta",
    "timezone",
    "transaction",
    "bulk_relate_cqrs_serialization",
    "get_delay_queue_max_size",
    "get_json_valid_value",
    "get_message_expiration_dt",
    "get_messages_prefetch_count_per_worker",
]
