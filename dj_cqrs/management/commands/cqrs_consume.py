"""``manage.py cqrs_consume``: run the replica consumer (``-w`` worker processes)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from dj_cqrs import metrics
from dj_cqrs.events.registry import handlers
from dj_cqrs.process.supervisor import EXIT_CONFIG, Supervisor
from dj_cqrs.registry import replica_registry
from dj_cqrs.replica.worker import startup_problems, worker_main
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
        parser.add_argument(
            "--metrics-port", type=int, default=None,
            help="Serve Prometheus metrics of all workers at http://ADDR:PORT/metrics (needs prometheus-client).",
        )
        parser.add_argument(
            "--metrics-addr", default="127.0.0.1", help="Address the metrics server binds (default 127.0.0.1).",
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
        problems = startup_problems(cqrs_ids, needs_queue=True)  # models or handlers: checked above
        if problems:
            raise CommandError("\n".join(problems))
        ignore = [p.strip() for p in (options["ignore_paths"] or "").split(",") if p.strip()]

        def supervise(server: metrics.MetricsServer | None = None) -> None:
            code = Supervisor(
                worker_main,
                args=(cqrs_ids,),
                workers=workers,
                reload=options["reload"],
                ignore_paths=ignore,
                sigint_timeout=options["sigint_timeout"],
                sigkill_timeout=options["sigkill_timeout"],
                fork=True,
                before_fork=connections.close_all,
                on_started=server.start if server is not None else None,
                on_worker_exit=metrics.mark_process_dead if server is not None else None,
            ).run()
            if code == EXIT_CONFIG:
                raise CommandError("A worker stopped on a configuration error (logged above).")

        if options["metrics_port"] is None:
            supervise()
            return
        with metrics.multiprocess_dir():  # the workers' values, aggregated when scraped
            if not metrics.available():
                raise CommandError("--metrics-port needs prometheus-client: pip install 'dj-cqrs[metrics]'")
            metrics.enable_for_processes()
            try:
                server = metrics.MetricsServer(options["metrics_port"], options["metrics_addr"])
            except OSError as exc:
                raise CommandError(f"Cannot serve metrics on {options['metrics_addr']}:{options['metrics_port']}: {exc}") from exc
            try:
                supervise(server)
            finally:
                server.stop()
