"""A django-health-check backend running :func:`dj_cqrs.ops.status.collect`.

Used only when django-health-check is installed (``dj_cqrs`` does not depend on it)::

    # settings.py (django-health-check with configurable checks), or
    # AppConfig.ready(): from dj_cqrs.ops import health; health.register()

Each crossed threshold and each unreachable broker or database is reported as an error of the
check; :func:`problems` gives the same messages without django-health-check.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dj_cqrs.ops import status

if TYPE_CHECKING:
    _Base = object
else:
    try:
        from health_check.backends import BaseHealthCheckBackend as _Base
    except ImportError:  # django-health-check is not installed

        class _Base:
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                raise ImportError(
                    "CqrsStatusHealthCheck needs django-health-check (pip install django-health-check)"
                )


def problems(result: status.Status | None = None) -> list[str]:
    """What makes this service unhealthy now (empty: healthy)."""
    result = result if result is not None else status.collect()
    found = [
        f"{item.component} {item.name} unreachable: {item.error}" for item in result.unreachable
    ]
    found.extend(breach.message for breach in result.breaches)
    return found


class CqrsStatusHealthCheck(_Base):
    """The outbox backlog, the replica queue and the dead letters against ``CQRS['status']``."""

    critical_service = True

    def check_status(self, subset: Any = None) -> None:
        from health_check.exceptions import ServiceUnavailable

        for message in problems():
            self.add_error(ServiceUnavailable(message))  # type: ignore[attr-defined]

    def identifier(self) -> str:
        return "CQRS"


def register() -> None:
    """Register the backend with django-health-check's plugin registry (versions that have one)."""
    from health_check.plugins import plugin_dir

    plugin_dir.register(CqrsStatusHealthCheck)


__all__ = ["CqrsStatusHealthCheck", "problems", "register"]
