"""Read-only copies of the master's rows, kept up to date by ``manage.py cqrs_consume``."""

from django.db import models

from dj_cqrs.mixins import ReplicaMixin


class ProductRef(ReplicaMixin):
    CQRS_ID = "product"

    id = models.IntegerField(primary_key=True)  # the master's primary key, not generated here
    sku = models.CharField(max_length=32)
    name = models.CharField(max_length=200)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    in_stock = models.BooleanField()


class CustomerRef(ReplicaMixin):
    CQRS_ID = "customer"

    id = models.IntegerField(primary_key=True)
    email = models.EmailField()
    name = models.CharField(max_length=200)
    tier = models.CharField(max_length=20)
    joined = models.DateField()
