"""``manage.py cqrs_sync --cqrs-id X -f '{...}' [-q QUEUE]``: re-publish master rows as SYNC."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from dj_cqrs.management.base import CqrsCommand
from dj_cqrs.sync import keyset, resync


class Command(CqrsCommand):
    help = (
        "Synchronize master rows to replicas (SYNC messages, in batches). Without --filter nothing"
        " is synced: use -f '{}' for every row."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        self.add_cqrs_id(parser, "-cid")
        self.add_filter(parser)
        parser.add_argument("--queue", "-q", default=None, help="Name of the specific replica queue")
        self.add_batch(parser)
        self.add_progress(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        model = self.master_model(options["cqrs_id"])
        if options["filter"] is None:
            self.stdout.write("No objects found for filter! (no --filter given: use -f '{}' for every row)")
            return
        qs = self.filtered(model, options["filter"])
        total = keyset.fetch_with_reconnect(qs.count, qs.db) if options["progress"] else None
        try:
            with self.progress(options["progress"], total) as on_progress:
                report = resync.sync_queryset(
                    model, qs, queue=options["queue"], batch_size=options["batch"],
                    on_error=self.report_row_error, on_progress=on_progress,
                )
        except resync.SyncAborted as exc:
            raise CommandError(
                f"{exc}. {exc.report.synced} instance(s) synced before the failure; run again to finish."
            ) from exc
        if not report.processed:
            self.stdout.write("No objects found for filter!")
            return
        write_summary(self, report)


def write_summary(command: CqrsCommand, report: resync.SyncReport) -> None:
    command.stdout.write(f"Done!\n{report.synced} instance(s) synced.\n{report.processed} instance(s) processed.")
    if report.filtered:
        command.stdout.write(f"{report.filtered} instance(s) not sent (is_sync_instance() is False or CQRS_PRODUCE off).")
    if report.failed:
        raise command.partial(f"{report.failed} instance(s) failed to sync (see above)")
