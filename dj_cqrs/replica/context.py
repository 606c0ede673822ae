"""What happened while the current message was applied, for the consumer to read afterwards.

django-cqrs's replica hooks (``cqrs_save``, ``cqrs_create``, ``cqrs_update``, ``cqrs_delete`` and
the ``cqrs`` manager's methods) return a falsy value on failure and the instance (or True)
otherwise, and user code overrides them; the reason of a failure, an ignored message's status and
whether a SYNC came to this replica's queue cannot travel through those return values. The
default implementations record them in an :class:`ApplyReport` held by a context variable, and the
consumer reads it once the hook has returned.
"""

from __future__ import annotations

import contextvars
import dataclasses

from dj_cqrs.core.reasons import Reason, Status


@dataclasses.dataclass(slots=True)
class ApplyReport:
    """The side results of applying one message through the replica hooks."""

    #: Why the hook failed (it returned a falsy value), when it knows.
    reason: Reason | None = None
    #: An ignored message's status (the hook returned a truthy value without writing).
    status: Status | None = None
    #: The database or validation error the hook caught (and logged) before returning None.
    exception: BaseException | None = None
    #: What exactly failed, for ``x-cqrs-error`` (e.g. the required fields that were missing).
    detail: str | None = None
    #: The message is a SYNC sent to this replica's queue: it passes over tombstones.
    direct_sync: bool = False

    def clear_result(self) -> None:
        """Forget the reason, status and exception (before the next row of a bulk apply)."""
        self.reason = self.status = self.exception = self.detail = None


_current: contextvars.ContextVar[ApplyReport | None] = contextvars.ContextVar("dj_cqrs_apply_report", default=None)


def current() -> ApplyReport:
    """The report of the message being applied (a new one when there is none in this context)."""
    report = _current.get()
    if report is None:
        report = ApplyReport()
        _current.set(report)
    return report


def reset() -> ApplyReport:
    """Start the report of a new message."""
    report = ApplyReport()
    _current.set(report)
    return report


__all__ = ["ApplyReport", "current", "reset"]
