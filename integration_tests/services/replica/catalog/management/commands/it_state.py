from django.core.management.base import BaseCommand

from catalog.models import GadgetRef, NoteRef, ProductRef, TagRef
from state_dump import dump


class Command(BaseCommand):
    def handle(self, *args, **options):
        self.stdout.write(dump({"it_product": ProductRef, "it_tag": TagRef, "it_note": NoteRef, "it_gadget": GadgetRef}, optional=("it_gadget",)))
