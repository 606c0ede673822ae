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
import sys
from typing import Any

import django

from dj_cqrs.core.handlers import default_handler
from dj_cqrs.exceptions import ConfigurationError
from dj_cqrs.metrics import recorder
from dj_cqrs.process.lifecycle import process_stop, stop_when_orphaned
from dj_cqrs.process.supervisor import EXIT_CONFIG
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
    try:
        transport = get_transport()
        if takes_handler(transport):
            transport.consume(cqrs_ids=cqrs_ids or None, handler=default_handler())
        else:  # a django-cqrs custom transport: ``consume(cqrs_ids=None)``, it applies messages itself
            transport.consume(cqrs_ids=cqrs_ids or None)
    except ConfigurationError as exc:
        # e.g. started with --skip-checks: the supervisor stops instead of restarting for ever
        logger.error("CQRS worker %s cannot run with these settings: %s", os.getpid(), exc)
        sys.exit(EXIT_CONFIG)
    logger.info("CQRS worker %s stopped", os.getpid())


def startup_problems(cqrs_ids: list[str] | None, needs_queue: bool = True) -> list[str]:
    """What stops ``cqrs_consume`` before any worker starts (the system checks may have been
    skipped): no ``CQRS['queue']`` (E006; ``needs_queue``: replica models or event handlers are
    registered), a transport that cannot be resolved (E002-E004), and
    replica tables missing from their database (``migrate`` not run), each message saying what
    to do. A database that cannot be reached is not a problem here: the workers wait for it."""
    from dj_cqrs.conf import cqrs_settings

    problems: list[str] = []
    if needs_queue and not cqrs_settings.queue:
        problems.append(
            "dj_cqrs.E006: CQRS['queue'] is not set: the replica has no queue to consume. Set"
            " CQRS['queue'] to this replica service's queue name, e.g. 'orders_replica'."
        )
    try:
        get_transport()
    except ConfigurationError as exc:
        problems.append(str(exc))
    problems.extend(_missing_tables(cqrs_ids))
    return problems


def _missing_tables(cqrs_ids: list[str] | None) -> list[str]:
    from django.db import DatabaseError, connections, router

    from dj_cqrs.database import is_outage
    from dj_cqrs.registry import replica_registry
    from dj_cqrs.replica.eligibility import is_db_model

    wanted: dict[str, list[Any]] = {}
    for cqrs_id, model in replica_registry.models.items():
        if (cqrs_ids and cqrs_id not in cqrs_ids) or not is_db_model(model):
            continue
        wanted.setdefault(router.db_for_write(model), []).append(model)
    problems = []
    for alias, models in wanted.items():
        try:
            with connections[alias].cursor() as cursor:
                tables = set(
                    connections[alias].introspection.table_names(cursor, include_views=True)
                )
        except DatabaseError as exc:
            if is_outage(exc):  # the workers wait for the database; say so before the first message
                logger.warning(
                    "CQRS consumer: database %r cannot be reached (%s); the workers wait for it."
                    " Check DATABASES if it does not come up.",
                    alias,
                    str(exc).strip(),
                )
                continue
            raise
        missing = [m for m in models if m._meta.db_table not in tables]
        if missing:
            problems.append(
                f"Database {alias!r} has no table for replica model(s)"
                f" {', '.join(f'{m._meta.label} ({m._meta.db_table})' for m in missing)}:"
                f" run manage.py migrate{'' if alias == 'default' else f' --database {alias}'} first."
                " Consuming now would fail every message until it is dead-lettered."
            )
    return problems


def takes_handler(transport: BaseTransport) -> bool:
    """Whether ``transport.consume`` accepts ``handler=`` (by name or through ``**kwargs``)."""
    try:
        parameters = inspect.signature(transport.consume).parameters.values()
    except (TypeError, ValueError):  # no signature to read: call it as django-cqrs did
        return False
    return any(p.name == "handler" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
