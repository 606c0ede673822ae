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


class NoteRef(ReplicaMixin):
    """Replica of ``it_note``: applies only ``cqrs_sync(queue=<this queue>)`` syncs, receives
    ``meta`` and records it in ``NoteMeta``. A text starting with ``fail`` makes the apply fail
    (returns None), to exercise retries and dead letters."""

    CQRS_ID = "it_note"
    CQRS_ONLY_DIRECT_SYNCS = True
    CQRS_META = True

    id = models.IntegerField(primary_key=True)
    text = models.TextField(default="")

    @classmethod
    def cqrs_create(cls, sync, mapped_data, previous_data=None, meta=None):
        if str(mapped_data.get("text", "")).startswith("fail"):
            return None
        obj = super().cqrs_create(sync, mapped_data, previous_data=previous_data, meta=meta)
        NoteMeta.objects.create(note_id=obj.pk, revision=obj.cqrs_revision, sync=sync, meta=meta)
        return obj

    def cqrs_update(self, sync, mapped_data, previous_data=None, meta=None):
        if str(mapped_data.get("text", "")).startswith("fail"):
            return None
        obj = super().cqrs_update(sync, mapped_data, previous_data=previous_data, meta=meta)
        NoteMeta.objects.create(note_id=self.pk, revision=self.cqrs_revision, sync=sync, meta=meta)
        return obj


class NoteMeta(models.Model):
    """What ``NoteRef`` received besides the row: one line per applied SAVE/SYNC."""

    note_id = models.IntegerField()
    revision = models.IntegerField()
    sync = models.BooleanField()
    meta = models.JSONField(null=True)


class GadgetRef(ReplicaMixin):
    CQRS_ID = "it_gadget"

    id = models.IntegerField(primary_key=True)
    name = models.CharField(max_length=100)
    qty = models.IntegerField(default=0)
