"""The master service owns these rows: every committed change is published to the replicas."""

from django.db import models

from dj_cqrs.mixins import MasterMixin


class Product(MasterMixin):
    CQRS_ID = "product"

    sku = models.CharField(max_length=32, unique=True)
    name = models.CharField(max_length=200)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    in_stock = models.BooleanField(default=True)


class Customer(MasterMixin):
    CQRS_ID = "customer"

    email = models.EmailField(unique=True)
    name = models.CharField(max_length=200)
    tier = models.CharField(max_length=20, default="basic")
    joined = models.DateField()
