"""The Quick start's models: a master and a replica of it in one service."""

import os

from django.db import models

from dj_cqrs.mixins import MasterMixin, ReplicaMixin


class Product(MasterMixin):
    CQRS_ID = "fh_product"
    name = models.CharField(max_length=200)
    price = models.DecimalField(max_digits=12, decimal_places=2)


if os.environ.get("FH_REPLICA") == "1":

    class ProductRef(ReplicaMixin):
        CQRS_ID = "fh_product"
        id = models.IntegerField(primary_key=True)
        name = models.CharField(max_length=200)
        price = models.DecimalField(max_digits=12, decimal_places=2)
