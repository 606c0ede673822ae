"""``manage.py cqrs_bulk_load -i FILE|-``: load a dump into a replica table (set-based, revision-safe)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from dj_cqrs.management.base import CqrsCommand, parse_bool
from dj_cqrs.sync import load


class Command(CqrsCommand):
    help = (
        "Bulk load of a CQRS dump into its replica model. A row never overwrites a replica row with"
        " the same or a newer revision. Bad lines are reported with their line number; exit code 3"
        " when any line failed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--input", "-i", required=True, help="Input file for loading (- for reading from stdin)"
        )
        parser.add_argument(
            "--clear", "-c", nargs="?", const=True, default=False, type=parse_bool,
            help="Delete existing models first (--clear, --clear=true, -c 1; --clear=false does not)",
        )
        self.add_batch(parser)
        self.add_progress(parser)
        parser.add_argument(
            "--workers", "-w", type=int, default=None,
            help="Processes preparing batches while one is written (default: one per CPU, up to 4,"
            " on PostgreSQL; 0 = none)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path = options["input"]
        stream = self.input_stream(options, path)
        try:
            with self.progress(options["progress"], unit="lines") as on_progress:
                report = load.load(
                    stream,
                    batch_size=options["batch"],
                    clear=options["clear"],
                    source=path,
                    on_error=self.report_line_error,
                    on_progress=on_progress,
                    workers=options["workers"],
                )
        except load.LoadError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            if path != "-":
                stream.close()
        if report.ignored_fields:
            names = ", ".join(sorted(report.ignored_fields))
            self.stderr.write(f"Ignored field(s) the replica model does not store: {names}")
        self.stderr.write(
            f"Done!\n{report.loaded} instance(s) loaded.\n"
            f"{report.skipped} instance(s) skipped (the replica has the same or a newer revision).\n"
            f"{report.failed} line(s) failed."
        )
        if report.failed:
            raise self.partial(f"{report.failed} line(s) of {path} could not be loaded (see above)")
