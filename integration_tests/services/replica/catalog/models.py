from django.db import models

from dj_cqrs.mixins import ReplicaMixin


class ProductRef(ReplicaMixin):
    CQRS_ID = "it_product"

    id = models.IntegerField(primary_key=True)
    name = models.CharField(max_length=200)
    description = models.TextField(default="")
    price = models.DecimalField(max_digits=20, decimal_places=6, null=True)
    created_at = models.DateTimeField(null=True)
    release_date = models.DateField(null=True)
    external_id = models.UUIDField(null=True)
    active = models.BooleanField(default=True)
    category = models.IntegerField(null=True)


class TagRef(ReplicaMixin):
    CQRS_ID = "it_tag"

    code = models.UUIDField(primary_key=True)
    label = models.CharField(max_length=100)


class GadgetRef(ReplicaMixin):
    CQRS_ID = "it_gadget"

    id = models.IntegerField(primary_key=True)
    name = models.CharField(max_length=100)
    qty = models.IntegerField(default=0)
