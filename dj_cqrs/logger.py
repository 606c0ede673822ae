"""django-cqrs import path ``dj_cqrs.logger``: logging of replica statements that timed out.

``replica.CQRS_LOG_TIMED_OUT_QUERIES`` turns it on; the statement is logged on
``replica.CQRS_QUERY_LOGGER`` (default ``django-cqrs``). See :mod:`dj_cqrs.replica.timeouts`.
"""

from __future__ import annotations

from typing import Any

from django.db import router

from dj_cqrs.replica.timeouts import is_timeout_error, log_timed_out_query


def install_last_query_capturer(model_cls: Any) -> None:
    """Kept for django-cqrs code: dj_cqrs reads the last statement from the connection's own
    query log when a timeout happens, so nothing needs installing."""


def log_timed_out_queries(error: BaseException, model_cls: Any) -> None:
    """Log the statement that timed out, if ``error`` is a statement timeout and logging is on."""
    using = router.db_for_write(model_cls)
    if is_timeout_error(error, using):
        log_timed_out_query(error, model_cls, using)


__all__ = ["install_last_query_capturer", "log_timed_out_queries"]
