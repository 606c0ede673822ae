"""``... | manage.py cqrs_diff_replica``: keys whose replica row is missing or has another revision."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError

from dj_cqrs.conf import cqrs_settings
from dj_cqrs.management.base import CqrsCommand
from dj_cqrs.sync import pipeline


class Command(CqrsCommand):
    help = "Diff of CQRS replica models from master diff stream (stdin)."

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            report = pipeline.diff_replica(
                self.input_stream(options), self.stdout, queue=cqrs_settings.queue,
                on_error=self.report_line_error,
                on_keys=lambda keys: self.stderr.write(f"PK to resync: {keys}"),
            )
        except pipeline.StreamError as exc:
            raise CommandError(str(exc)) from exc
        if report.failed_lines:
            raise self.partial(f"{report.failed_lines} line(s) could not be compared (see above)")
