"""The retry policy of replica models.

:func:`default_retry_delay` / :func:`default_should_retry` are what the replica model hooks
``get_cqrs_retry_delay(current_retry)`` and ``should_retry_cqrs(current_retry, exception)`` do
unless a model overrides them: ``replica.CQRS_MAX_RETRIES`` retries, waiting
``CQRS_RETRY_DELAY * CQRS_RETRY_BACKOFF ** current_retry`` seconds, capped at
``CQRS_RETRY_MAX_DELAY`` (factor 1, the default, is django-cqrs's constant delay). What a
transport writes for a retry or a dead letter is in :mod:`dj_cqrs.core.settlement`.
"""

from __future__ import annotations

import math
from typing import Any

from dj_cqrs.conf import cqrs_settings
from dj_cqrs.core.messages import HARD_MAX_DELAY


def default_retry_delay(current_retry: int) -> float:
    """Seconds before retry number ``current_retry + 1`` (exponential when configured, capped)."""
    replica = cqrs_settings.replica
    base = float(replica.CQRS_RETRY_DELAY)
    factor = float(replica.CQRS_RETRY_BACKOFF)
    cap = max(float(replica.CQRS_RETRY_MAX_DELAY), base)
    if factor <= 1 or base <= 0:
        return min(base, HARD_MAX_DELAY)
    exponent = max(int(current_retry), 0)
    # factor ** exponent overflows quickly; the cap is reached long before that.
    if exponent * math.log(factor) > math.log(cap / base) + 1:
        return min(cap, HARD_MAX_DELAY)
    return min(base * factor**exponent, cap, HARD_MAX_DELAY)


def default_should_retry(current_retry: int) -> bool:
    """``current_retry < replica.CQRS_MAX_RETRIES`` (None retries forever)."""
    max_retries = cqrs_settings.replica.CQRS_MAX_RETRIES
    return max_retries is None or current_retry < max_retries


def sanitize_delay(value: Any) -> float:
    """A hook's answer as a usable delay: a finite number of seconds in [0, HARD_MAX_DELAY]."""
    try:
        delay = float(value)
    except (TypeError, ValueError):
        return 0.0
    if math.isnan(delay) or delay < 0:
        return 0.0
    return min(delay, HARD_MAX_DELAY)


__all__ = ["default_retry_delay", "default_should_retry", "sanitize_delay"]
