"""``manage.py cqrs_diff_master --cqrs-id X``: stream ``[pk, revision]`` pairs of the master."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from dj_cqrs.management.base import CqrsCommand
from dj_cqrs.sync import pipeline


class Command(CqrsCommand):
    help = "Diff of CQRS master models: '<cqrs_id>,<now>', then [[pk, revision], ...] per batch."

    def add_arguments(self, parser: CommandParser) -> None:
        self.add_cqrs_id(parser, "-cid")
        self.add_filter(parser)
        self.add_batch(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        model = self.master_model(options["cqrs_id"])
        qs = self.filtered(model, options["filter"])
        if not qs.exists():
            # As django-cqrs: nothing on stdout (not even the header), exit status 0.
            self.stderr.write("No objects found for filter!")
            return
        pipeline.diff_master(model, qs, self.stdout, batch_size=options["batch"])
