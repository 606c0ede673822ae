"""A ``cqrs_consume`` worker process: what the supervisor (:mod:`dj_cqrs.process.supervisor`)
spawns.

A worker runs ``django.setup()`` and the transport's consume loop, with the default handler the
``dj_cqrs`` app installed (the replica's batch handler,
:func:`dj_cqrs.replica.batch.handle_batch_through_outages`, and the domain events route), until SIGTERM/SIGINT or until
its supervisor is gone. Asked to stop, it finishes the messages it is applying and acknowledges
them; the ones it had not started stay unacknowledged and are redelivered by the broker.
"""

from __future__ import annotations

import inspect
import logging
import os
import signal
from typing import Any

import django

from dj_cqrs.core.handlers import default_handler
from dj_cqrs.metrics import recorder
from dj_cqrs.process.lifecycle import process_stop, stop_when_orphaned
from dj_cqrs.transport import get_transport
from dj_cqrs.transport.base import BaseTransport

logger = logging.getLogger("django-cqrs.worker")


def worker_main(cqrs_ids: list[str] | None) -> None:
    """Entry point of a worker process."""
    django.setup()

    def _stop(signum: int, frame: Any) -> None:
        process_stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    stop_when_orphaned(process_stop)
    logger.info("CQRS worker %s started", os.getpid())
    recorder().worker_started()
    transport = get_transport()
    if takes_handler(transport):
        transport.consume(cqrs_ids=cqrs_ids or None, handler=default_handler())
    else:  # a django-cqrs custom transport: ``consume(cqrs_ids=None)``, it applies messages itself
        transport.consume(cqrs_ids=cqrs_ids or None)
    logger.info("CQRS worker %s stopped", os.getpid())


def takes_handler(transport: BaseTransport) -> bool:
    """Whether ``transport.consume`` accepts ``handler=`` (by name or through ``**kwargs``)."""
    try:
        parameters = inspect.signature(transport.consume).parameters.values()
    except (TypeError, ValueError):  # no signature to read: call it as django-cqrs did
        return False
    return any(p.name == "handler" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
