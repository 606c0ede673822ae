"""``... | manage.py cqrs_deleted_diff_master``: the replica keys that no longer exist on the master."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError

from dj_cqrs.management.base import CqrsCommand
from dj_cqrs.sync import pipeline


class Command(CqrsCommand):
    help = "Diff of deleted CQRS models pks from master diff stream (stdin)."

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            report = pipeline.deleted_diff_master(
                self.input_stream(options), self.stdout, on_error=self.report_line_error,
                on_keys=lambda keys: self.stderr.write(f"PK to delete: {keys}"),
            )
        except pipeline.StreamError as exc:
            raise CommandError(str(exc)) from exc
        if report.failed_lines:
            raise self.partial(f"{report.failed_lines} line(s) could not be checked (see above)")
