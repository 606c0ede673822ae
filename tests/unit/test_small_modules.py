"""Registries, legacy import paths, utils and lifecycle helpers."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import override_settings

from dj_cqrs.checks import check_settings
from dj_cqrs.process.lifecycle import Backoff, StopFlag
from dj_cqrs.registries import MasterRegistry
from dj_cqrs.registry import Registry, master_registry, replica_registry
from dj_cqrs.transport import get_transport, reset_transport, set_transport
from dj_cqrs.transport.memory import MemoryTransport
from tests.unit.conftest import cqrs_with


class A:
    CQRS_ID = "a"


class B:
    CQRS_ID = "a"


def test_registry():
    registry = Registry("master")
    registry.register_model(A)
    registry.register_model(A)
    assert "a" in registry and len(registry) == 1 and list(registry) == [A]
    registry.register_model(B)
    assert registry.duplicates == [("a", A, B)]
    assert registry.get_model_by_cqrs_id("a") is A

    reloaded = type("A", (), {"CQRS_ID": "a", "__module__": A.__module__, "__qualname__": A.__qualname__})
    registry.register_model(reloaded)  # the same class re-created (module reload): replaced
    assert registry.get_model_by_cqrs_id("a") is reloaded

    registry.unregister("a")
    assert "a" not in registry
    registry.register_model(A)
    registry.clear()
    assert len(registry) == 0 and registry.duplicates == []


def test_registry_facade_register_model(isolated_registries):
    MasterRegistry.register_model(A)
    assert master_registry.get_model_by_cqrs_id("a") is A


def test_no_settings_and_no_models_is_fine(isolated_registries):
    master_registry.clear()
    replica_registry.clear()
    with override_settings():
        del settings.CQRS
        assert check_settings() == []


def test_legacy_import_paths():
    from dj_cqrs.managers import MasterManager, ReplicaManager
    from dj_cqrs.master.managers import MasterManager as M
    from dj_cqrs.replica.managers import ReplicaManager as R

    assert (MasterManager, ReplicaManager) == (M, R)


def test_utils():
    from dj_cqrs import utils

    assert utils.get_delay_queue_max_size() == 1000
    assert utils.get_messages_prefetch_count_per_worker() == 1000
    with override_settings(CQRS=cqrs_with(replica={"delay_queue_max_size": None, "CQRS_BATCH_SIZE": 7})):
        assert utils.get_delay_queue_max_size() is None
        assert utils.get_messages_prefetch_count_per_worker() == 14


@pytest.mark.django_db
def test_bulk_relate_cqrs_serialization_is_a_harmless_context_manager_and_decorator():
    from dj_cqrs.utils import apply_query_timeouts, bulk_relate_cqrs_serialization
    from tests.apps.replica_app.models import SimplestModelRef

    with bulk_relate_cqrs_serialization("author") as block:
        assert block.cqrs_id == "author"

    @bulk_relate_cqrs_serialization()
    def decorated():
        return 42

    assert decorated() == 42
    apply_query_timeouts(SimplestModelRef)


def test_stop_flag():
    flag = StopFlag()
    assert not flag.is_set()
    assert flag.wait(0) is False
    flag.set()
    assert flag.is_set() and flag.wait(-1) is True
    flag.clear()
    assert not flag.is_set()


def test_backoff_grows_and_is_capped():
    backoff = Backoff(initial=1.0, maximum=4.0)
    delays = [backoff.next() for _ in range(5)]
    for delay, base in zip(delays, [1, 2, 4, 4, 4], strict=True):
        assert 0.8 * base <= delay <= 1.2 * base
    backoff.reset()
    assert backoff.next() <= 1.2


def test_reset_transport_ignores_errors_while_closing():
    class Broken(MemoryTransport):
        def close(self):
            raise RuntimeError("cannot close")

    set_transport(Broken())
    reset_transport()
    assert not isinstance(get_transport(), Broken)
    reset_transport()
