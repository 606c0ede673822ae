"""The issue's realistic master model: an integer, a 100-character name, a 300-character text, a
decimal, an aware datetime, a boolean and a nullable FK (about 700 bytes on the wire).

``PlainItem`` has the same columns (the CQRS revision and timestamp included) without CQRS;
``CqrsItem`` is the master model; ``TrackedItem`` the same with ``CQRS_TRACKED_FIELDS``;
``TriggerItem`` the same with ``CQRS_DB_TRIGGERS`` (dj_cqrs on PostgreSQL; django-cqrs ignores the
attribute, and the benchmark runs it for dj_cqrs only).
"""

from django.db import models

from dj_cqrs.mixins import MasterMixin


class Category(models.Model):
    """The target of the nullable FK (not a CQRS model)."""

    name = models.CharField(max_length=50)


class ItemFields(models.Model):
    value = models.IntegerField(default=0)
    name = models.CharField(max_length=100)
    text = models.CharField(max_length=300)
    price = models.DecimalField(max_digits=12, decimal_places=2, default=0)
    happened_at = models.DateTimeField()
    active = models.BooleanField(default=True)
    category = models.ForeignKey(
        Category, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        abstract = True


class PlainItem(ItemFields):
    cqrs_revision = models.IntegerField(default=0)
    cqrs_updated = models.DateTimeField(auto_now=True)


class CqrsItem(MasterMixin, ItemFields):
    CQRS_ID = "bench_item"


class TrackedItem(MasterMixin, ItemFields):
    CQRS_ID = "bench_tracked_item"
    CQRS_TRACKED_FIELDS = "__all__"


class TriggerItem(MasterMixin, ItemFields):
    CQRS_ID = "bench_trigger_item"
    CQRS_DB_TRIGGERS = True
