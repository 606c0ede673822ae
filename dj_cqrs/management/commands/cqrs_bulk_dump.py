"""``manage.py cqrs_bulk_dump --cqrs-id X [-o FILE|-]``: dump a master table, one JSON row per line."""

from __future__ import annotations

import os
from typing import Any

from django.core.management.base import CommandError, CommandParser, OutputWrapper

from dj_cqrs.management.base import CqrsCommand
from dj_cqrs.sync import dump, keyset


class Command(CqrsCommand):
    help = "Bulk dump of a CQRS master model: the CQRS_ID line, then one JSON object per row."

    def add_arguments(self, parser: CommandParser) -> None:
        self.add_cqrs_id(parser, "-c")
        parser.add_argument(
            "--output", "-o", default=None,
            help="Output file for dumping (- for writing to stdout; default <CQRS_ID>.dump)",
        )
        self.add_batch(parser)
        self.add_progress(parser)
        parser.add_argument("--force", "-f", action="store_true", help="Override output file")

    def handle(self, *args: Any, **options: Any) -> None:
        model = self.master_model(options["cqrs_id"])
        path = options["output"] or f"{model.CQRS_ID}.dump"
        qs = dump.base_queryset(model)
        total = keyset.fetch_with_reconnect(qs.count, qs.db) if options["progress"] else None
        with self.progress(options["progress"], total) as on_progress:
            if path == "-":
                report = dump.dump(
                    model, _Verbatim(self.stdout), batch_size=options["batch"], on_error=self.report_row_error,
                    on_progress=on_progress,
                )
            else:
                report = self._to_file(model, path, options, on_progress)
        self.stderr.write(f"Done!\n{report.dumped} instance(s) saved.\n{report.dumped + report.failed} instance(s) processed.")
        if report.failed:
            raise self.partial(f"{report.failed} row(s) could not be serialized (see above)")

    def _to_file(self, model: Any, path: str, options: dict[str, Any], on_progress: Any) -> dump.DumpReport:
        if os.path.exists(path) and not options["force"]:
            raise CommandError(f"File {path} exists!")
        partial = f"{path}.partial"
        try:
            with open(partial, "w", encoding="utf-8") as out:
                report = dump.dump(
                    model, out, batch_size=options["batch"], on_error=self.report_row_error,
                    on_progress=on_progress,
                )
            os.replace(partial, path)
        except OSError as exc:
            raise CommandError(f"File {path} cannot be written: {exc.strerror}!") from exc
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
        return report


class _Verbatim:
    """Writes text as given: Django's ``OutputWrapper`` would end every write with a newline."""

    def __init__(self, wrapper: OutputWrapper) -> None:
        self._wrapper = wrapper

    def write(self, text: str, /) -> None:
        self._wrapper.write(text, ending="")
