"""``... | manage.py cqrs_diff_sync``: re-publish the keys ``cqrs_diff_replica`` found."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from dj_cqrs.management.base import CqrsCommand
from dj_cqrs.management.commands.cqrs_sync import write_summary
from dj_cqrs.sync import pipeline, resync


class Command(CqrsCommand):
    help = "Diff synchronizer from CQRS replica stream (stdin): SYNC messages for the listed keys."

    def add_arguments(self, parser: CommandParser) -> None:
        self.add_batch(parser)
        self.add_progress(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            with self.progress(options["progress"]) as on_progress:
                report = pipeline.diff_sync(
                    self.input_stream(options), batch_size=options["batch"],
                    on_error=self.report_line_error, on_row_error=self.report_row_error,
                    on_progress=on_progress,
                )
        except pipeline.StreamError as exc:
            raise CommandError(str(exc)) from exc
        except resync.SyncAborted as exc:
            raise CommandError(f"{exc}. Run the pipeline again to finish.") from exc
        assert report.sync is not None
        if report.keys > report.sync.processed:
            self.stdout.write(
                f"{report.keys - report.sync.processed} key(s) no longer exist on the master"
                " (the cqrs_deleted_* pipeline removes them from replicas)."
            )
        if report.failed_lines:
            self.stderr.write(f"{report.failed_lines} line(s) could not be read (see above)")
        write_summary(self, report.sync)
        if report.failed_lines:
            raise self.partial(f"{report.failed_lines} line(s) could not be read (see above)")
