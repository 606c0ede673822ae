"""``manage.py demo_state``: print this service's CQRS rows as canonical JSON (used by demo.py)."""

import time

from django.core.management.base import BaseCommand

from storefront.state import state_json


class Command(BaseCommand):
    help = "Print the CQRS rows of this service as JSON, keyed by CQRS_ID and primary key."

    def add_arguments(self, parser):
        parser.add_argument(
            "--watch", type=float, default=None, metavar="SECONDS",
            help="Print a new line every SECONDS until stopped.",
        )

    def handle(self, *args, watch, **options):
        self.stdout.write(state_json())
        while watch:
            time.sleep(watch)
            self.stdout.write(state_json())
            self.stdout.flush()
