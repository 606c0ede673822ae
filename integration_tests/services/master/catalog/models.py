import uuid

from django.db import models

from dj_cqrs.mixins import MasterMixin


class Category(models.Model):
    name = models.CharField(max_length=100)


class Product(MasterMixin):
    CQRS_ID = "it_product"
    CQRS_TRACKED_FIELDS = ["name", "price"]

    id = models.IntegerField(primary_key=True)
    name = models.CharField(max_length=200)
    description = models.TextField(default="")
    price = models.DecimalField(max_digits=20, decimal_places=6, null=True)
    created_at = models.DateTimeField(null=True)
    release_date = models.DateField(null=True)
    external_id = models.UUIDField(null=True)
    active = models.BooleanField(default=True)
    category = models.ForeignKey(Category, null=True, on_delete=models.SET_NULL)


class Tag(MasterMixin):
    """A model whose primary key is a UUID not named ``id``."""

    CQRS_ID = "it_tag"

    code = models.UUIDField(primary_key=True, default=uuid.uuid4)
    label = models.CharField(max_length=100)


class Gadget(MasterMixin):
    """Every write is captured by database triggers (dj_cqrs on PostgreSQL; a plain master model
    for django-cqrs, which ignores the attribute)."""

    CQRS_ID = "it_gadget"
    CQRS_DB_TRIGGERS = True
    CQRS_TRACKED_FIELDS = ["qty"]

    id = models.IntegerField(primary_key=True)
    name = models.CharField(max_length=100)
    qty = models.IntegerField(default=0)
