"""The django-health-check backend (django-health-check is not a dependency: its three names are
stubbed here with the interface the backend uses)."""

from __future__ import annotations

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


def test_without_django_health_check(transport, monkeypatch):
    monkeypatch.setitem(sys.modules, "health_check", None)
    monkeypatch.setitem(sys.modules, "health_check.backends", None)
    monkeypatch.delitem(sys.modules, "dj_cqrs.ops.health", raising=False)
    health = importlib.import_module("dj_cqrs.ops.health")
    try:
        assert health.problems() == []
        with pytest.raises(ImportError, match="django-health-check"):
            health.CqrsStatusHealthCheck()
    finally:
        sys.modules.pop("dj_cqrs.ops.health", None)
