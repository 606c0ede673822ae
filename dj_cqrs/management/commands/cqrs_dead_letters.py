"""``manage.py cqrs_dead_letters {dump,retry,purge,count,summary}``: this replica's dead letters.

* ``dump``: print every letter's body, one per line (``--headers``: one JSON object per line with
  the routing key, the ``x-cqrs-*`` reason headers and the body). Non-destructive.
* ``retry``: re-publish letters to this replica's queue with ``retries`` reset and a fresh
  ``expires``; each is removed from the dead-letter queue once the broker confirmed it.
* ``purge``: delete letters.
* ``count``: print how many letters there are; ``summary``: how many per cqrs_id and reason.

``--cqrs-id`` restricts any of them to one replica model, ``--limit`` to the first N matches.
"""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import (
    BaseCommand,
    CommandError,
    CommandParser,
    DjangoHelpFormatter,
)

from dj_cqrs.conf import cqrs_settings
from dj_cqrs.events.registry import matching
from dj_cqrs.exceptions import CqrsError
from dj_cqrs.management.base import cqrs_id_flags, plural
from dj_cqrs.registry import replica_registry
from dj_cqrs.replica import dead_letters
from dj_cqrs.transport import get_transport

#: The subcommands, each with the line ``--help`` shows for it.
SUBCOMMANDS = {
    "dump": "print each letter (--headers: with its reason), removing none",
    "retry": "re-publish letters to this replica's queue, then remove them",
    "purge": "delete letters",
    "count": "print how many letters there are",
    "summary": "print how many letters there are per CQRS_ID and reason",
}


class _Formatter(DjangoHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Keeps the line breaks of the description: one line per subcommand."""


class Command(BaseCommand):
    help = "Inspect and handle this replica's dead letters (the queue of CQRS['queue']).\n\nsubcommands:\n" + "\n".join(
        f"  {name:<8} {text}" for name, text in SUBCOMMANDS.items()
    )

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.formatter_class = _Formatter
        return parser

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("command", choices=list(SUBCOMMANDS), help="What to do (see the list above).")
        parser.add_argument(*cqrs_id_flags(), dest="cqrs_id", default=None, help="Only letters for this CQRS_ID (or domain event name).")
        parser.add_argument("--limit", "-l", type=int, default=None, help="At most this many letters.")
        parser.add_argument(
            "--headers", action="store_true", help="dump: one JSON object per letter, with its headers."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        cqrs_id = options["cqrs_id"]
        limit = options["limit"]
        if limit is not None and limit < 0:
            raise CommandError("--limit must be >= 0")
        if cqrs_id is not None and cqrs_id not in replica_registry and not matching(cqrs_id):
            raise CommandError(f"Wrong CQRS ID: {cqrs_id}! (neither a replica model nor an event name a handler matches)")
        if not cqrs_settings.queue:  # the dead-letter queue is named after it
            raise CommandError(
                "dj_cqrs.E006: CQRS['queue'] is not set, so this service has no dead-letter queue."
                " Set CQRS['queue'] to this replica service's queue name, e.g. 'orders_replica'."
            )
        try:
            store = dead_letters.store_for(get_transport())
            command = options["command"]
            if command == "dump":
                shown = 0
                for letter in dead_letters.browse(store, cqrs_id, limit):
                    self.stdout.write(letter.as_json() if options["headers"] else letter.text())
                    shown += 1
                self.stderr.write(f"{plural(shown, 'dead letter')} shown")
            elif command == "count":
                self.stdout.write(str(dead_letters.count(store, cqrs_id)))
            elif command == "summary":
                table = dead_letters.summary(store, cqrs_id)
                for (letter_id, reason), number in sorted(table.items()):
                    self.stdout.write(f"{letter_id}\t{reason}\t{number}")
                self.stdout.write(f"total\t\t{sum(table.values())}")
            elif command == "retry":
                report = dead_letters.retry(store, cqrs_id, limit)
                self.stdout.write(
                    f"Retried {plural(report.done, 'dead letter')}"
                    f" (not retried: {report.malformed} malformed, {report.unknown} for unknown CQRS_IDs,"
                    f" {report.unroutable} unroutable; {report.expired} expired dropped)"
                )
            else:
                report = dead_letters.purge(store, cqrs_id, limit)
                self.stdout.write(f"Purged {plural(report.done, 'dead letter')}")
        except CqrsError as exc:
            raise CommandError(str(exc)) from exc
