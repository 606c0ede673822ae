"""``manage.py cqrs_consume``: run the replica consumer (``-w`` worker processes)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from dj_cqrs.events.registry import handlers
from dj_cqrs.process.supervisor import Supervisor
from dj_cqrs.registry import replica_registry
from dj_cqrs.replica.worker import worker_main
from dj_cqrs.sync import find_model


class Command(BaseCommand):
    help = "Consume CQRS events: apply them to this service's replica models and run its domain event handlers."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--workers", "-w", type=int, default=1, help="Worker processes (default 1).")
        parser.add_argument(
            "--cqrs-id", "-cid", nargs="*", dest="cqrs_id", default=None,
            help="Only bind these CQRS_IDs (default: every registered replica model).",
        )
        parser.add_argument("--reload", "-r", action="store_true", help="Restart workers when .py files change.")
        # nargs="?" as django-cqrs: the flag alone gives None (nothing ignored; no time limit)
        parser.add_argument(
            "--ignore-paths", nargs="?", default=None, help="Comma-separated paths --reload ignores."
        )
        parser.add_argument(
            "--sigint-timeout", nargs="?", type=float, default=5,
            help="Seconds workers get to stop (default 5; the flag alone: no limit).",
        )
        parser.add_argument(
            "--sigkill-timeout", nargs="?", type=float, default=1,
            help="Seconds to wait after killing a worker (default 1; the flag alone: no limit).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        workers = options["workers"]
        if workers < 1:
            raise CommandError("--workers must be >= 1")
        cqrs_ids = options["cqrs_id"] or None
        if cqrs_ids:
            unknown = [c for c in cqrs_ids if find_model(replica_registry, c) is None]
            if unknown:
                raise CommandError(f"Wrong CQRS ID: {', '.join(unknown)}!")
        if not len(replica_registry) and not handlers():
            raise CommandError("No replica models or event handlers are registered in this service.")
        ignore = [p.strip() for p in (options["ignore_paths"] or "").split(",") if p.strip()]
        Supervisor(
            worker_main,
            args=(cqrs_ids,),
            workers=workers,
            reload=options["reload"],
            ignore_paths=ignore,
            sigint_timeout=options["sigint_timeout"],
            sigkill_timeout=options["sigkill_timeout"],
            fork=True,
            before_fork=connections.close_all,
        ).run()
