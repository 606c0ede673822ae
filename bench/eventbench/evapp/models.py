"""What the handler of the ``events`` benchmark writes: one row per handled event."""

from django.db import models


class HandledOrder(models.Model):
    """A row the atomic handler inserts in the transaction of its inbox row."""

    event_id = models.CharField(max_length=64)
    key = models.CharField(max_length=64)
    seq = models.BigIntegerField()
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    customer = models.CharField(max_length=50)
