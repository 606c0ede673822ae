"""A ``cqrs_consume`` worker process: what the supervisor (:mod:`dj_cqrs.process.supervisor`)
spawns.

A worker runs ``django.setup()`` and the transport's consume loop until SIGTERM/SIGINT or until
its supervisor is gone. Asked to stop, it finishes the messages it is applying and acknowledges
them; the ones it had not started stay unacknowledged and are redelivered by the broker.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

import django

from dj_cqrs.process.lifecycle import process_stop, stop_when_orphaned
from dj_cqrs.transport import get_transport

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
    get_transport().consume(cqrs_ids=cqrs_ids or None)
    logger.info("CQRS worker %s stopped", os.getpid())
