"""An order recorder for ``it_product`` (integration_tests/test_cluster.py, partitioned queues).

Installed instead of ``catalog`` when ``IT_ORDER_RECORDER=1`` (settings_replica.py).
``ProductRecorder`` is a ``RawReplicaMixin`` handler: in one transaction per message it keeps the
last revision applied per product (``OrderState``) and writes every revision it applies to
``OrderApplied`` with the revision it followed. A redelivery of a revision already applied (a
consumer killed between its commit and its acknowledgement) is skipped, as a replica model's
revision guard would; anything else is applied as it comes, so a revision that arrives out of
order shows as a row whose ``previous`` is not ``revision - 1``.
"""

import os

from django.db import models, transaction

from dj_cqrs.metas import ReplicaMeta
from dj_cqrs.mixins import RawReplicaMixin


class OrderState(models.Model):
    key = models.IntegerField(primary_key=True)
    revision = models.IntegerField()
    name = models.CharField(max_length=200)


class OrderApplied(models.Model):
    key = models.IntegerField()
    revision = models.IntegerField()
    previous = models.IntegerField(null=True)
    pid = models.IntegerField()


class ProductRecorder(RawReplicaMixin):
    CQRS_ID = "it_product"

    @classmethod
    def cqrs_save(cls, master_data, previous_data=None, sync=False, meta=None, **kwargs):
        key, revision = int(master_data["id"]), int(master_data["cqrs_revision"])
        with transaction.atomic():
            state = OrderState.objects.select_for_update().filter(key=key).first()
            if state is not None and revision <= state.revision:
                return True  # a redelivery of what is applied already
            OrderApplied.objects.create(
                key=key,
                revision=revision,
                previous=state.revision if state else None,
                pid=os.getpid(),
            )
            OrderState.objects.update_or_create(
                key=key, defaults={"revision": revision, "name": master_data["name"]}
            )
        return True

    @classmethod
    def cqrs_delete(cls, master_data, meta=None, **kwargs):
        OrderState.objects.filter(key=int(master_data["id"])).delete()
        return True


ReplicaMeta.register(ProductRecorder)
