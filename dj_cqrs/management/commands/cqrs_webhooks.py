"""``manage.py cqrs_webhooks``: deliver webhook subscriptions (for services that run no relay;
``cqrs_relay`` delivers them too)."""

from __future__ import annotations

import signal
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from dj_cqrs.management.base import non_negative_seconds, positive_int
from dj_cqrs.process.lifecycle import StopFlag
from dj_cqrs.webhooks.deliverer import Deliverer


class Command(BaseCommand):
    help = "Deliver CQRS changes to webhook subscriptions (several processes may run: leases)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--database",
            action="append",
            dest="databases",
            help="Database alias (repeatable; default: every database with the outbox table).",
        )
        parser.add_argument(
            "--interval",
            type=non_negative_seconds,
            default=1.0,
            help="Seconds between looks at the feed when idle (default 1).",
        )
        parser.add_argument(
            "--concurrency",
            type=positive_int,
            default=None,
            help="Subscriptions delivered at once (default webhooks.concurrency).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        stop = StopFlag()

        def _stop(signum: int, frame: Any) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        Deliverer(
            databases=options["databases"],
            interval=options["interval"],
            concurrency=options["concurrency"],
            stop=stop,
        ).run()
