"""Print what ``NoteRef`` received besides the rows (``NoteMeta``), as JSON."""

import json

from django.core.management.base import BaseCommand

from catalog.models import NoteMeta


class Command(BaseCommand):
    def handle(self, *args, **options):
        rows = [
            {"note_id": m.note_id, "revision": m.revision, "sync": m.sync, "meta": m.meta}
            for m in NoteMeta.objects.order_by("pk")
        ]
        self.stdout.write(json.dumps(rows, sort_keys=True))
