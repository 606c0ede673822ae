"""A django-health-check backend running :func:`dj_cqrs.ops.status.collect`.

Used only when django-health-check is installed (``dj_cqrs`` does not depend on it)::

    # urls.py, django-health-check 3.18 and later (4.x included)
    path("ht/", HealthCheckView.as_view(checks=["dj_cqrs.ops.health.CqrsStatusHealthCheck", ...]))
    # before 3.18, in an AppConfig.ready(): from dj_cqrs.ops import health; health.register()

Each crossed threshold and each unreachable broker or database is reported as an error of the
check; :func:`problems` gives the same messages without django-health-check.

django-health-check changed its check API twice; the backend follows all three: 4.x
(``health_check.base.HealthCheck``, whose ``run()`` raises), the 3.x releases with
``health_check.backends.HealthCheck`` and the older ones with ``BaseHealthCheckBackend`` (both
call ``check_status()``, which adds errors).
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from dj_cqrs.conf import cqrs_settings
from dj_cqrs.ops import status


def _base() -> type:
    """django-health-check's base class of this installed version."""
    try:
        from health_check.base import HealthCheck  # 4.x

        return HealthCheck  # type: ignore[no-any-return]
    except ImportError:
        pass
    try:
        from health_check.backends import HealthCheck as Backend  # 3.x, later releases
    except ImportError:
        try:
            from health_check.backends import BaseHealthCheckBackend as Backend  # older 3.x
        except ImportError:  # django-health-check is not installed
            return _Missing
    return Backend  # type: ignore[no-any-return]


class _Missing:
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


class _CqrsStatusCheck:
    """The outbox backlog, the replica queue and the dead letters against ``CQRS['status']``.

    ``CqrsStatusHealthCheck`` is this class on top of the installed django-health-check's base
    class, made at its first use (django-health-check reads Django's settings when imported, so
    this module must not import it at import time)."""

    critical_service = True

    @property
    def timeout(self) -> datetime.timedelta:
        """django-health-check 4.x's budget: the broker connection and the management API each
        have ``CQRS['status']['timeout']``, the database queries a little more."""
        return datetime.timedelta(seconds=2 * float(cqrs_settings.status.timeout) + 5)

    def run(self) -> None:
        """django-health-check 4.x: raise with every problem. 4.x runs a sync check in an
        executor thread, where no request ends to close the database connections the check
        opened: they are closed here (else each probe's thread kept one)."""
        from django.db import connections
        from health_check.exceptions import ServiceUnavailable

        try:
            found = problems()
        finally:
            connections.close_all()
        if found:
            raise ServiceUnavailable("; ".join(found))

    def check_status(self, subset: Any = None) -> None:
        """django-health-check 3.x: add an error per problem."""
        from health_check.exceptions import ServiceUnavailable

        for message in problems():
            self.add_error(ServiceUnavailable(message))  # type: ignore[attr-defined]

    def identifier(self) -> str:
        return "CQRS"

    def __repr__(self) -> str:
        return "CQRS"


_built: dict[str, type] = {}


def _backend() -> type:
    if "class" not in _built:
        _built["class"] = type(
            "CqrsStatusHealthCheck",
            (_CqrsStatusCheck, _base()),
            {"__module__": __name__, "__qualname__": "CqrsStatusHealthCheck"},
        )
    return _built["class"]


if TYPE_CHECKING:
    CqrsStatusHealthCheck = _CqrsStatusCheck
else:

    def __getattr__(name: str) -> Any:
        if name == "CqrsStatusHealthCheck":
            return _backend()
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register() -> None:
    """Register the backend with django-health-check's plugin registry (versions that have one)."""
    from health_check.plugins import plugin_dir

    plugin_dir.register(_backend())


__all__ = ["CqrsStatusHealthCheck", "problems", "register"]
