"""The Quick start's models, as docs/getting-started.md and the README show them
(``tests/unit/test_docs_pages.py`` checks that these classes are the pages' own)."""

from django.db import models

from dj_cqrs.mixins import MasterMixin, ReplicaMixin


class Product(MasterMixin):
    CQRS_ID = "product"
    name = models.CharField(max_length=200)
    price = models.DecimalField(max_digits=12, decimal_places=2)


class ProductRef(ReplicaMixin):
    CQRS_ID = "product"
    id = models.IntegerField(primary_key=True)
    name = models.CharField(max_length=200)
    price = models.DecimalField(max_digits=12, decimal_places=2)
