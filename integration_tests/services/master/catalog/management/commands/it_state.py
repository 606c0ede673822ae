from django.core.management.base import BaseCommand

from catalog.models import Note, Product, Tag
from state_dump import dump
from catalog.extra import extra_dumps, extra_models  # noqa: I001


class Command(BaseCommand):
    def handle(self, *args, **options):
        self.stdout.write(dump({"it_product": Product, "it_tag": Tag, "it_note": Note, **extra_dumps()}, optional=("it_gadget",)))
