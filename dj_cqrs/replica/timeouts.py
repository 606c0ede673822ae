"""Statement timeouts for replica writes (``replica.CQRS_QUERY_TIMEOUT``, PostgreSQL and MySQL)."""

from __future__ import annotations

import logging
from typing import Any

from django.db import connections

from dj_cqrs.conf import cqrs_settings
from dj_cqrs.constants import (
    DB_VENDOR_MYSQL,
    DB_VENDOR_PG,
    MYSQL_TIMEOUT_ERROR_CODE,
    PG_TIMEOUT_FLAG,
)


def apply_query_timeout(model: Any, using: str) -> None:
    """Set the statement timeout for the current transaction, if configured."""
    timeout = cqrs_settings.replica.CQRS_QUERY_TIMEOUT
    if not timeout:
        return
    conn = connections[using]
    with conn.cursor() as cursor:
        if conn.vendor == DB_VENDOR_PG:
            cursor.execute("SET LOCAL statement_timeout TO %s", [int(timeout)])
        elif conn.vendor == DB_VENDOR_MYSQL:
            cursor.execute("SET SESSION MAX_EXECUTION_TIME=%s", [int(timeout)])


def is_timeout_error(exc: BaseException, using: str) -> bool:
    vendor = connections[using].vendor
    if vendor == DB_VENDOR_PG:
        return PG_TIMEOUT_FLAG in str(exc)
    if vendor == DB_VENDOR_MYSQL:
        args: tuple[Any, ...] = tuple(getattr(getattr(exc, "__cause__", None), "args", ()) or getattr(exc, "args", ()))
        return bool(args) and args[0] == MYSQL_TIMEOUT_ERROR_CODE
    return False


def log_timed_out_query(exc: BaseException, model: Any, using: str) -> None:
    """Log the statement that timed out, when ``CQRS_LOG_TIMED_OUT_QUERIES`` is on."""
    if not cqrs_settings.replica.CQRS_LOG_TIMED_OUT_QUERIES:
        return
    name = cqrs_settings.replica.CQRS_QUERY_LOGGER or "django-cqrs"
    queries = connections[using].queries_log
    last = queries[-1]["sql"] if queries else "(unknown: enable DEBUG to capture SQL)"
    logging.getLogger(name).error("CQRS query timeout for %s: %s (%s)", model.CQRS_ID, last, exc)
