"""``manage.py cqrs_relay``: publish outbox events the immediate path could not publish."""

from __future__ import annotations

import signal
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from dj_cqrs import metrics
from dj_cqrs.master.outbox.backlog import pending_everywhere
from dj_cqrs.master.relay import Relay
from dj_cqrs.process.lifecycle import StopFlag
from dj_cqrs.webhooks.deliverer import Deliverer


def serve_relay_metrics(port: int | None, addr: str) -> metrics.MetricsServer | None:
    """``--metrics-port``: the relay's counters and the outbox backlog (read when scraped)."""
    if port is None:
        return None
    if not metrics.available():
        raise CommandError("--metrics-port needs prometheus-client: pip install 'dj-cqrs[metrics]'")
    metrics.enable_for_processes()
    backlog = metrics.OutboxCollector(lambda: pending_everywhere(close_connections=True))
    try:
        server = metrics.MetricsServer(port, addr, [backlog])
    except OSError as exc:
        raise CommandError(f"Cannot serve metrics on {addr}:{port}: {exc}") from exc
    server.start()
    return server


class Command(BaseCommand):
    help = "Publish pending CQRS outbox events (run it next to the master service; several may run)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--database", action="append", dest="databases", help="Database alias (repeatable; default: every database with the outbox table).")
        parser.add_argument("--batch", "-b", type=int, default=None, help="Events per batch (default master.outbox_batch_size).")
        parser.add_argument("--interval", type=float, default=1.0, help="Seconds to wait when the outbox is empty (default 1).")
        parser.add_argument("--min-age", type=float, default=None, metavar="SECONDS", help="Only publish events at least this many seconds old (default: master.outbox_grace, 2 seconds; 0 with outbox_publish='relay').")
        parser.add_argument("--once", action="store_true", help="Publish what is pending now, then exit (waiting through database outages).")
        parser.add_argument("--metrics-port", type=int, default=None, help="Serve Prometheus metrics (publishing, outbox backlog) at http://ADDR:PORT/metrics (needs prometheus-client).")
        parser.add_argument("--metrics-addr", default="127.0.0.1", help="Address the metrics server binds (default 127.0.0.1).")
        parser.add_argument("--no-webhooks", action="store_true", help="Do not deliver webhook subscriptions (run cqrs_webhooks elsewhere).")

    def handle(self, *args: Any, **options: Any) -> None:
        server = serve_relay_metrics(options["metrics_port"], options["metrics_addr"])
        try:
            self._relay(options)
        finally:
            if server is not None:
                server.stop()

    def _relay(self, options: dict[str, Any]) -> None:
        stop = StopFlag()
        relay = Relay(
            databases=options["databases"],
            batch_size=options["batch"],
            interval=options["interval"],
            min_age=options["min_age"],
            stop=stop,
        )

        def _stop(signum: int, frame: Any) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        if options["once"]:
            sent = relay.run_until_done()
            waiting = relay.waiting()
            self.stderr.write(f"Published {sent} event(s).")
            if waiting:
                raise CommandError(f"Stopped while waiting for database(s) {', '.join(waiting)}: their events stay pending.")
            return
        deliverer = None
        if not options["no_webhooks"]:  # its own threads: the broker path never waits for it
            deliverer = Deliverer(databases=options["databases"], interval=options["interval"], stop=stop)
            deliverer.start()
        try:
            relay.run()
        finally:
            stop.set()
            if deliverer is not None:
                deliverer.join()
