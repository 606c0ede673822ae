from django.db import models

from dj_cqrs.mixins import MasterMixin


class PlainItem(models.Model):
    """The same row as CqrsItem (revision and timestamp columns included), without CQRS."""

    name = models.CharField(max_length=100)
    value = models.IntegerField(default=0)
    price = models.DecimalField(max_digits=12, decimal_places=2, default=0)
    cqrs_revision = models.IntegerField(default=0)
    cqrs_updated = models.DateTimeField(auto_now=True)


class CqrsItem(MasterMixin):
    CQRS_ID = "bench_item"

    name = models.CharField(max_length=100)
    value = models.IntegerField(default=0)
    price = models.DecimalField(max_digits=12, decimal_places=2, default=0)


class TriggerItem(MasterMixin):
    """The same model with CQRS_DB_TRIGGERS (dj_cqrs on PostgreSQL: the outbox row is written by a
    trigger inside the statement; django-cqrs ignores the attribute)."""

    CQRS_ID = "bench_trigger_item"
    CQRS_DB_TRIGGERS = True

    name = models.CharField(max_length=100)
    value = models.IntegerField(default=0)
    price = models.DecimalField(max_digits=12, decimal_places=2, default=0)
