"""``manage.py cqrs_status``: the outbox backlog and the replica queue, as a probe.

Exit codes: 0 healthy, 1 a threshold crossed (or the replica queue missing), 2 bad options,
3 broker unreachable, 4 database unreachable (the highest applies). See
:mod:`dj_cqrs.ops.status`.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from dj_cqrs.exceptions import CqrsError
from dj_cqrs.ops import status


def _non_negative(kind: type) -> Any:
    def parse(text: str) -> Any:
        value = kind(text)
        if value < 0:
            raise ValueError(text)
        return value

    parse.__name__ = kind.__name__
    return parse


class Command(BaseCommand):
    help = "Show the outbox backlog and the replica queue; exit non-zero when unhealthy."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--json", action="store_true", help="One JSON object instead of the text report."
        )
        parser.add_argument(
            "--max-outbox-age",
            type=_non_negative(float),
            metavar="SECONDS",
            help="Unhealthy when an unpublished event is older.",
        )
        parser.add_argument(
            "--max-outbox-pending",
            type=_non_negative(int),
            metavar="N",
            help="Unhealthy when more events of a CQRS_ID are pending.",
        )
        parser.add_argument(
            "--max-lag",
            type=_non_negative(float),
            metavar="SECONDS",
            help="Unhealthy when the replica queue is further behind.",
        )
        parser.add_argument(
            "--max-dead-letters",
            type=_non_negative(int),
            metavar="N",
            help="Unhealthy with more dead letters.",
        )
        side = parser.add_mutually_exclusive_group()
        side.add_argument("--master-only", action="store_true", help="Only the outbox.")
        side.add_argument(
            "--replica-only", action="store_true", help="Only the replica queue and dead letters."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            thresholds = status.Thresholds.from_settings(
                **{name: options[name] for name in status.THRESHOLDS}
            )
            result = status.collect(
                thresholds, master=not options["replica_only"], replica=not options["master_only"]
            )
        except CqrsError as exc:
            raise CommandError(str(exc), returncode=status.USAGE) from exc
        if options["json"]:
            self.stdout.write(json.dumps(result.as_dict(), default=str))
        else:
            self.stdout.write(status.render(result))
        if result.exit_code:
            raise SystemExit(result.exit_code)
