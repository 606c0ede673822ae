"""``manage.py cqrs_deleted_diff_replica --cqrs-id X``: stream the replica's primary keys."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from dj_cqrs.management.base import CqrsCommand
from dj_cqrs.sync import pipeline


class Command(CqrsCommand):
    help = "Diff of deleted CQRS models: '<cqrs_id>,<now>', then the replica's keys per batch."

    def add_arguments(self, parser: CommandParser) -> None:
        self.add_cqrs_id(parser, "-cid", side="replica")
        self.add_filter(parser)
        self.add_batch(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        model = self.replica_model(options["cqrs_id"])
        qs = self.filtered(model, options["filter"])
        if not qs.exists():
            # As django-cqrs: nothing on stdout (not even the header), exit status 0.
            self.stderr.write("No objects found for filter!")
            return
        pipeline.deleted_diff_replica(model, qs, self.stdout, batch_size=options["batch"])
