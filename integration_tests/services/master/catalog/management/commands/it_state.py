from django.core.management.base import BaseCommand

from catalog.models import Gadget, Product, Tag
from state_dump import dump


class Command(BaseCommand):
    def handle(self, *args, **options):
        self.stdout.write(dump({"it_product": Product, "it_tag": Tag, "it_gadget": Gadget}))
