"""A master model whose writes are all captured by database triggers (dj_cqrs + PostgreSQL only:
this app is installed only when dj_cqrs's trigger support and django-pgtrigger are importable)."""

from django.db import models

from dj_cqrs.mixins import MasterMixin


class Gadget(MasterMixin):
    """Every write is captured by database triggers (dj_cqrs on PostgreSQL; a plain master model
    for django-cqrs, which ignores the attribute)."""

    CQRS_ID = "it_gadget"
    CQRS_DB_TRIGGERS = True
    CQRS_TRACKED_FIELDS = ["qty"]

    id = models.IntegerField(primary_key=True)
    name = models.CharField(max_length=100)
    qty = models.IntegerField(default=0)
