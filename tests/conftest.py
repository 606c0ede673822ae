from __future__ import annotations

import pytest

from dj_cqrs.testing import use_memory_transport
from dj_cqrs.transport.memory import MemoryTransport


@pytest.fixture
def transport() -> MemoryTransport:
    with use_memory_transport() as memory:
        yield memory


@pytest.fixture(autouse=True)
def _reset_replica_state():
    from dj_cqrs.master.dispatcher import dispatcher
    from tests.apps.master_app import hooks
    from tests.apps.replica_app.models import (
        AlwaysFailing,
        CustomDeleteRef,
        EventLog,
        FlakyModelRef,
        RecordingQuerySet,
    )

    EventLog.events.clear()
    CustomDeleteRef.deleted_custom.clear()
    FlakyModelRef.fail_times = 0
    FlakyModelRef.attempts = 0
    AlwaysFailing.attempts.clear()
    RecordingQuerySet.calls.clear()
    hooks.calls.clear()
    dispatcher.reset_circuit()
    yield
