"""django-cqrs import path ``dj_cqrs.transport.mixins``: logging helpers for custom transports.

Each method logs one line about a payload on the ``django-cqrs`` logger, with the structured
context dj_cqrs's own transports use (``cqrs_id``, ``cqrs_pk``, ``cqrs_correlation_id`` ...).
"""

from __future__ import annotations

import logging
from typing import Any

from dj_cqrs.log import payload_context

logger = logging.getLogger("django-cqrs")


class LoggingMixin:
    @staticmethod
    def _line(level: int, text: str, payload: Any) -> None:
        logger.log(
            level,
            "CQRS is %s: pk = %s (%s), correlation_id = %s.",
            text,
            payload.pk,
            payload.cqrs_id,
            payload.correlation_id,
            extra=payload_context(payload),
        )

    @staticmethod
    def log_consumed(payload: Any) -> None:
        LoggingMixin._line(logging.INFO, "received", payload)

    @staticmethod
    def log_consumed_accepted(payload: Any) -> None:
        LoggingMixin._line(logging.INFO, "applied", payload)

    @staticmethod
    def log_consumed_denied(payload: Any) -> None:
        LoggingMixin._line(logging.WARNING, "denied", payload)

    @staticmethod
    def log_consumed_failed(payload: Any) -> None:
        LoggingMixin._line(logging.WARNING, "failed", payload)

    @staticmethod
    def log_dead_letter(payload: Any) -> None:
        LoggingMixin._line(logging.WARNING, "added to dead letter queue", payload)

    @staticmethod
    def log_delayed(payload: Any, delay: Any, eta: Any) -> None:
        LoggingMixin._line(logging.WARNING, f"delayed by {delay}s (eta {eta})", payload)

    @staticmethod
    def log_requeued(payload: Any) -> None:
        LoggingMixin._line(logging.WARNING, "requeued", payload)

    @staticmethod
    def log_produced(payload: Any) -> None:
        LoggingMixin._line(logging.INFO, "published", payload)


__all__ = ["LoggingMixin"]
