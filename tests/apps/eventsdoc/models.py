"""Plain models (no CQRS mixin) with the fields the examples of docs/events.md read and write."""

from django.db import models


class Order(models.Model):
    status = models.CharField(max_length=20, default="new")
    total = models.DecimalField(max_digits=12, decimal_places=2)


class Payment(models.Model):
    order_id = models.IntegerField()
    total = models.DecimalField(max_digits=12, decimal_places=2)


class LedgerEntry(models.Model):
    order_id = models.CharField(max_length=50)
    kind = models.CharField(max_length=50)
    amount = models.DecimalField(max_digits=12, decimal_places=2)


class Challenge(models.Model):
    title = models.CharField(max_length=200)
    end_date = models.DateField()
    state = models.CharField(max_length=50, default="")
