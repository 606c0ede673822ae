"""``manage.py demo_write {create,update,delete}``: one phase of the demo's writes on the master.

Plain ORM code, as the service's own views would run it: each change is published to the
replicas when its transaction commits. Output, one JSON object per line: ``{"plan": ...}`` first,
then ``{"state": ...}`` after each committed transaction (the master's rows, which the replica
must converge to) and finally ``{"state": ..., "done": true}``. ``--pace`` sleeps after each
transaction, like live traffic, so that the replica can be watched catching up.
"""

import json
import time
from decimal import Decimal

from django.core.management.base import BaseCommand
from django.db import transaction

from inventory.models import Customer, Product
from inventory.state import state

PRODUCTS = [
    ("ESP-1KG", "Espresso beans 1 kg", "18.90"),
    ("FLT-500", "Filter roast 500 g", "9.50"),
    ("DEC-250", "Decaf 250 g", "6.20"),
    ("GRD-HND", "Hand grinder", "49.00"),
    ("KTL-GNK", "Gooseneck kettle", "39.90"),
    ("AER-PRS", "AeroPress", "34.50"),
    ("V60-02", "V60 dripper", "22.00"),
    ("FLT-100", "Paper filters x100", "5.40"),
    ("SCL-01", "Coffee scale", "27.80"),
    ("MUG-CER", "Ceramic mug", "12.00"),
    ("TMP-58", "Tamper 58 mm", "19.90"),
    ("CRM-BRL", "Crème brûlée syrup", "8.75"),
]
CUSTOMERS = [
    ("ada@example.com", "Ada", "2024-01-10"),
    ("grace@example.com", "Grace", "2024-03-02"),
    ("alan@example.com", "Alan", "2024-06-23"),
    ("edsger@example.com", "Edsger", "2025-05-11"),
]


def create(committed):
    for sku, name, price in PRODUCTS:  # autocommit: one transaction (one event) per product
        Product.objects.create(sku=sku, name=name, price=Decimal(price))
        committed()
    with transaction.atomic():  # four customers, published together when the block commits
        for email, name, joined in CUSTOMERS:
            Customer.objects.create(email=email, name=name, joined=joined)
    committed()


def update(committed):
    products = list(Product.objects.order_by("pk")[:6])
    for product in products:
        product.price = (product.price * Decimal("1.10")).quantize(Decimal("0.01"))
        product.in_stock = product.pk % 2 == 0
        product.save()
        committed()
    first = products[0]
    first.name += " (limited)"  # a second update of the same row: revision 2
    first.save()
    committed()
    with transaction.atomic():
        for customer in Customer.objects.order_by("pk")[:2]:
            customer.tier = "gold"
            customer.save()
    committed()


def delete(committed):
    doomed = Product.objects.order_by("-pk").values_list("pk", flat=True)[:3]
    Product.objects.filter(pk__in=list(doomed)).delete()  # one transaction, a DELETE event per row
    committed()
    Customer.objects.order_by("-pk").first().delete()
    committed()


PHASES = {
    "create": (
        create,
        f"create {len(PRODUCTS)} products (one transaction each) and {len(CUSTOMERS)} customers (one transaction)",
    ),
    "update": (update, "update 6 products (price +10%, stock), one of them twice, and 2 customers"),
    "delete": (delete, "delete 3 products (one queryset delete) and 1 customer"),
}


class Command(BaseCommand):
    help = "Run one phase of the demo's writes (create, update or delete), printing the master state."

    def add_arguments(self, parser):
        parser.add_argument("phase", choices=sorted(PHASES))
        parser.add_argument("--pace", type=float, default=0.0, help="Seconds to sleep after each transaction.")

    def emit(self, **fields):
        self.stdout.write(json.dumps(fields, sort_keys=True))
        self.stdout.flush()

    def handle(self, *args, phase, pace, **options):
        run, plan = PHASES[phase]
        self.emit(plan=plan)

        def committed():
            self.emit(state=state())
            time.sleep(pace)

        run(committed)
        self.emit(state=state(), done=True)
