"""Helpers shared by the unit tests."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings

from dj_cqrs.registry import master_registry, replica_registry
from dj_cqrs.testing import use_memory_transport
from dj_cqrs.transport.memory import MemoryTransport


def cqrs_with(**changes: Any) -> dict[str, Any]:
    """A copy of the test ``settings.CQRS`` with top-level keys replaced and the ``master`` /
    ``replica`` sections merged (pass ``master={...}`` / ``replica={...}``)."""
    config = copy.deepcopy(settings.CQRS)
    for key, value in changes.items():
        if key in ("master", "replica") and isinstance(value, dict):
            config[key] = {**config.get(key, {}), **value}
        else:
            config[key] = value
    return config


@contextlib.contextmanager
def cqrs_settings_and_transport(**changes: Any) -> Iterator[MemoryTransport]:
    """``override_settings(CQRS=...)`` plus a memory transport installed *after* the change."""
    with override_settings(CQRS=cqrs_with(**changes)), use_memory_transport() as transport:
        yield transport


@pytest.fixture
def isolated_registries() -> Iterator[None]:
    """Restore the master/replica registries after a test that registers throwaway models."""
    saved = [(r, dict(r.models), list(r.duplicates)) for r in (master_registry, replica_registry)]
    try:
        yield
    finally:
        for registry, models, duplicates in saved:
            registry.models.clear()
            registry.models.update(models)
            registry.duplicates[:] = duplicates


def bodies(transport: MemoryTransport) -> list[dict[str, Any]]:
    """Decoded JSON bodies of everything published so far."""
    return [m.data for m in transport.published]
