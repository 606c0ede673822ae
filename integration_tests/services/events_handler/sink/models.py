"""What service B's handlers write.

``Handled``: one row per handler run that committed, written in the handler's transaction, with
the event's id and seq. Deliberately without a unique constraint on (handler, event_id): a
duplicate would be a second row, which the tests count (a constraint would turn it into a failing
handler, i.e. retries and a dead letter, a less direct symptom). ``Attempt``: every call of the
failure handlers, through the autocommit "journal" connection (it survives their rollback).
``Switch``: flags a test flips ("fixed").
"""

from django.db import models


class Handled(models.Model):
    handler = models.CharField(max_length=50)
    event_id = models.CharField(max_length=64)
    name = models.CharField(max_length=100)
    key = models.CharField(max_length=50)
    seq = models.BigIntegerField()
    retries = models.IntegerField()
    pid = models.IntegerField()

    class Meta:
        indexes = [models.Index(fields=["handler", "event_id"], name="sink_handled_pair")]


class Attempt(models.Model):
    handler = models.CharField(max_length=50)
    event_id = models.CharField(max_length=64)
    retries = models.IntegerField()
    pid = models.IntegerField()


class Switch(models.Model):
    name = models.CharField(max_length=50, primary_key=True)
    on = models.BooleanField(default=False)
