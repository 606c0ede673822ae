"""Helpers for your tests: an in-memory transport that applies events to local replicas.

    from dj_cqrs.testing import use_memory_transport

    def test_product_reaches_the_replica(transactional_db):  # events are published at commit
        with use_memory_transport() as transport:
            product = Product.objects.create(name="chair", price="49.00")
            transport.join()  # applies the published events to the replica models of the project
        assert ProductRef.objects.get(pk=product.pk).name == "chair"

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
