"""What service A writes next to its events, so a test knows which events really committed.

* ``Order``: the business row each emitting transaction updates (one per key);
* ``Emitted``: one row per event emitted in a transaction that committed (written in it);
* ``RolledBack``: one row per event emitted in a transaction that was rolled back (written
  through the autocommit "journal" connection, so it stays);
* ``Challenge``: has a model event source (``shop.sources``).
"""

from django.db import models


class Order(models.Model):
    key = models.CharField(max_length=50, primary_key=True)
    updates = models.IntegerField(default=0)


class Emitted(models.Model):
    event_id = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=100)
    key = models.CharField(max_length=50)
    tx = models.IntegerField()


class RolledBack(models.Model):
    event_id = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=100)
    key = models.CharField(max_length=50)
    tx = models.IntegerField()


class Challenge(models.Model):
    id = models.IntegerField(primary_key=True)
    title = models.CharField(max_length=100)
    ends_at = models.DateTimeField()
