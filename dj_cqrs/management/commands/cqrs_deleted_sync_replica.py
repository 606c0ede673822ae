"""``... | manage.py cqrs_deleted_sync_replica``: delete the listed rows from the replica."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError

from dj_cqrs.management.base import CqrsCommand
from dj_cqrs.sync import pipeline


class Command(CqrsCommand):
    help = "Diff for deleted objects synchronizer from CQRS master stream (stdin)."

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            report = pipeline.deleted_sync_replica(self.input_stream(options), on_error=self.report_line_error)
        except pipeline.StreamError as exc:
            raise CommandError(str(exc)) from exc
        self.stderr.write(f"{report.applied} instance(s) deleted.")
        if report.failed_lines:
            raise self.partial(f"{report.failed_lines} line(s) could not be applied (see above)")
