"""The django-health-check backend (django-health-check is not a dependency: its three names are
stubbed here with the interface the backend uses)."""

from __future__ import annotations

import asyncio
import datetime
import importlib
import sys
import types

import pytest
from django.utils import timezone

from dj_cqrs.models import OutboxEvent

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def health_check_stub(monkeypatch):
    class BaseHealthCheckBackend:
        def __init__(self):
            self.errors = []

        def add_error(self, error):
            self.errors.append(error)

    class ServiceUnavailable(Exception):
        pass

    registered = []
    modules = {
        "health_check": types.ModuleType("health_check"),
        "health_check.backends": types.ModuleType("health_check.backends"),
        "health_check.exceptions": types.ModuleType("health_check.exceptions"),
        "health_check.plugins": types.ModuleType("health_check.plugins"),
    }
    modules["health_check.backends"].BaseHealthCheckBackend = BaseHealthCheckBackend
    modules["health_check.exceptions"].ServiceUnavailable = ServiceUnavailable
    modules["health_check.plugins"].plugin_dir = types.SimpleNamespace(register=registered.append)
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delitem(sys.modules, "dj_cqrs.ops.health", raising=False)
    health = importlib.import_module("dj_cqrs.ops.health")
    yield health, registered
    sys.modules.pop("dj_cqrs.ops.health", None)


def test_backend_reports_breaches(transport, health_check_stub):
    health, registered = health_check_stub
    check = health.CqrsStatusHealthCheck()
    check.check_status()
    assert check.errors == []
    OutboxEvent.objects.create(
        created_at=timezone.now() - datetime.timedelta(seconds=900),
        cqrs_id="simplest",
        signal_type="SAVE",
        object_pk="1",
    )
    check.check_status()
    assert [str(e) for e in check.errors] == [
        "outbox default/simplest: the oldest pending event is 900s old (limit 300s)"
    ]
    assert check.identifier() == "CQRS"
    health.register()
    assert registered == [health.CqrsStatusHealthCheck]


@pytest.fixture
def health_check_4_stub(monkeypatch):
    """django-health-check 4.x: ``health_check.base.HealthCheck`` (an ABC whose ``run()`` raises),
    no ``health_check.backends``; the view runs a sync ``run()`` with a ``timeout`` budget."""
    import abc

    class HealthCheck(abc.ABC):
        timeout = datetime.timedelta(seconds=5)

        @abc.abstractmethod
        def run(self): ...

    class ServiceUnavailable(Exception):
        pass

    modules = {
        "health_check": types.ModuleType("health_check"),
        "health_check.base": types.ModuleType("health_check.base"),
        "health_check.exceptions": types.ModuleType("health_check.exceptions"),
        "health_check.backends": None,
    }
    modules["health_check.base"].HealthCheck = HealthCheck
    modules["health_check.exceptions"].ServiceUnavailable = ServiceUnavailable
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delitem(sys.modules, "dj_cqrs.ops.health", raising=False)
    yield importlib.import_module("dj_cqrs.ops.health"), HealthCheck, ServiceUnavailable
    sys.modules.pop("dj_cqrs.ops.health", None)


def test_backend_on_django_health_check_4(transport, health_check_4_stub):
    health, base, unavailable = health_check_4_stub
    check = health.CqrsStatusHealthCheck()
    assert isinstance(check, base)
    check.run()  # healthy: returns
    assert check.timeout > base.timeout  # the broker and the management API have 5 s each
    OutboxEvent.objects.create(
        created_at=timezone.now() - datetime.timedelta(seconds=900),
        cqrs_id="simplest",
        signal_type="SAVE",
        object_pk="1",
    )
    with pytest.raises(unavailable, match="the oldest pending event is 900s old"):
        check.run()
    assert repr(check) == "CQRS"


def test_backend_on_django_health_check_4_closes_its_thread_connections(
    transport, health_check_4_stub
):
    import threading

    from django.db import connection

    if connection.vendor == "sqlite":
        pytest.skip("Django keeps an in-memory SQLite database open")
    health, _, _ = health_check_4_stub
    left_open = []

    def probe():  # as django-health-check 4.x runs a sync check: in an executor thread
        health.CqrsStatusHealthCheck().run()
        left_open.append(connection.connection is not None)

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join(30)
    assert left_open == [False]


@pytest.fixture
def health_check_3_late_stub(monkeypatch):
    """The later 3.x releases: ``health_check.backends.HealthCheck`` (no BaseHealthCheckBackend)."""

    class HealthCheck:
        def __init__(self):
            self.errors = []

        def add_error(self, error):
            self.errors.append(error)

    class ServiceUnavailable(Exception):
        pass

    modules = {
        "health_check": types.ModuleType("health_check"),
        "health_check.backends": types.ModuleType("health_check.backends"),
        "health_check.exceptions": types.ModuleType("health_check.exceptions"),
        "health_check.base": None,
    }
    modules["health_check.backends"].HealthCheck = HealthCheck
    modules["health_check.exceptions"].ServiceUnavailable = ServiceUnavailable
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delitem(sys.modules, "dj_cqrs.ops.health", raising=False)
    yield importlib.import_module("dj_cqrs.ops.health"), HealthCheck
    sys.modules.pop("dj_cqrs.ops.health", None)


def test_backend_on_later_django_health_check_3(transport, health_check_3_late_stub):
    health, base = health_check_3_late_stub
    check = health.CqrsStatusHealthCheck()
    assert isinstance(check, base)
    check.check_status()
    assert check.errors == []


def test_backend_with_the_installed_django_health_check(transport):
    """The real package when the environment has it (not a dependency)."""
    views = pytest.importorskip("health_check.views")
    if not hasattr(views, "HealthCheckView"):
        pytest.skip("django-health-check before 3.19: checks are registered, not configured")
    from django.test import RequestFactory

    HealthCheckView = views.HealthCheckView  # noqa: N806 - the class's name

    sys.modules.pop("dj_cqrs.ops.health", None)
    view = HealthCheckView.as_view(checks=["dj_cqrs.ops.health.CqrsStatusHealthCheck"])
    OutboxEvent.objects.create(
        created_at=timezone.now() - datetime.timedelta(seconds=900),
        cqrs_id="simplest",
        signal_type="SAVE",
        object_pk="1",
    )
    response = view(RequestFactory().get("/ht/?format=json", HTTP_ACCEPT="application/json"))
    if asyncio.iscoroutine(response):  # 4.x: an async view
        response = asyncio.run(response)
    assert response.status_code == 500
    assert "the oldest pending event is 900s old" in response.content.decode()


def test_without_django_health_check(transport, monkeypatch):
    monkeypatch.setitem(sys.modules, "health_check", None)
    monkeypatch.setitem(sys.modules, "health_check.backends", None)
    monkeypatch.setitem(sys.modules, "health_check.base", None)
    monkeypatch.delitem(sys.modules, "dj_cqrs.ops.health", raising=False)
    health = importlib.import_module("dj_cqrs.ops.health")
    try:
        assert health.problems() == []
        with pytest.raises(ImportError, match="django-health-check"):
            health.CqrsStatusHealthCheck()
    finally:
        sys.modules.pop("dj_cqrs.ops.health", None)
