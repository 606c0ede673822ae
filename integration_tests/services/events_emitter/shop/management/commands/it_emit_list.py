"""Emit the events given as JSON on stdin (``[{"name": ..., "key": ..., "data": {...}}]``) in one
transaction; print their ids as a JSON list."""

import json
import sys

from django.core.management.base import BaseCommand
from django.db import transaction

from dj_cqrs.events import emit


class Command(BaseCommand):
    def handle(self, *args, **options):
        with transaction.atomic():
            ids = [
                emit(item["name"], item["key"], item.get("data", {}))
                for item in json.loads(sys.stdin.read())
            ]
        self.stdout.write(json.dumps(ids))
