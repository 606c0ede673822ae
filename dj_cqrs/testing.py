"""Helpers for your tests: an in-memory transport that applies events to local replicas.

    from dj_cqrs.testing import use_memory_transport

    def test_order_reaches_replica(db):
        with use_memory_transport() as transport:
            Order.objects.create(id=1, total=10)
            transport.join()            # applies the published events to local replica models
        assert ReplicaOrder.objects.get(id=1).total == 10

``transport.payloads`` lists what was published; ``transport.dead_letters`` what was rejected.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from dj_cqrs.transport import reset_transport, set_transport
from dj_cqrs.transport.memory import MemoryTransport


@contextlib.contextmanager
def use_memory_transport() -> Iterator[MemoryTransport]:
    """Route every publish of this block to a fresh :class:`MemoryTransport`."""
    transport = MemoryTransport()
    set_transport(transport)
    try:
        yield transport
    finally:
        set_transport(None)
        reset_transport()


__all__ = ["MemoryTransport", "use_memory_transport"]
