"""Run challenge steps given as JSON on stdin, then print ``{"outbox": <EVENT rows per name>}``.

Steps: ``{"op": "create", "id": 1, "ends_in_hours": 24}`` (a save), ``{"op": "save", "id": 1}``
(a save that changes nothing), ``{"op": "shift", "id": 1, "ends_in_hours": 12}`` (a queryset
update: no signal, as when time passes), ``{"op": "rollback_create", "id": 9, "ends_in_hours": 1}``
(a save in a transaction that is rolled back).
"""

import datetime
import json
import sys

from django.core.management.base import BaseCommand
from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from dj_cqrs.models import OutboxEvent
from shop.models import Challenge


def ends(hours):
    return timezone.now() + datetime.timedelta(hours=hours)


class Command(BaseCommand):
    def handle(self, *args, **options):
        for step in json.loads(sys.stdin.read()):
            op = step["op"]
            if op == "create":
                Challenge.objects.create(
                    id=step["id"],
                    title=f"challenge {step['id']}",
                    ends_at=ends(step["ends_in_hours"]),
                )
            elif op == "save":
                Challenge.objects.get(id=step["id"]).save()
            elif op == "shift":
                Challenge.objects.filter(id=step["id"]).update(ends_at=ends(step["ends_in_hours"]))
            elif op == "rollback_create":
                try:
                    with transaction.atomic():
                        Challenge.objects.create(
                            id=step["id"], title="rolled back", ends_at=ends(step["ends_in_hours"])
                        )
                        raise RuntimeError("roll back")
                except RuntimeError:
                    pass
            else:
                raise ValueError(f"unknown op {op!r}")
        rows = (
            OutboxEvent.objects.filter(signal_type="EVENT")
            .values("cqrs_id")
            .annotate(n=Count("id"))
        )
        self.stdout.write(json.dumps({"outbox": {row["cqrs_id"]: row["n"] for row in rows}}))
