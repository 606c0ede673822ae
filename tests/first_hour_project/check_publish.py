"""The same test under pytest-django (``python -m pytest -c fh_pytest.ini check_publish.py``)."""

from decimal import Decimal

import pytest
from shop.models import Product

from dj_cqrs.transport import get_transport


@pytest.mark.django_db(transaction=True)
def test_save():
    Product.objects.create(name="from a test", price=Decimal("1.50"))
    print(f"TRANSPORT={type(get_transport()).__name__}")
