"""A user's test that forgot the memory fixture (run by ``manage.py test``)."""

from decimal import Decimal

from django.test import TransactionTestCase

from dj_cqrs.transport import get_transport
from shop.models import Product


class ProductTest(TransactionTestCase):
    def test_save(self):
        Product.objects.create(name="from a test", price=Decimal("1.50"))
        print(f"TRANSPORT={type(get_transport()).__name__}")
