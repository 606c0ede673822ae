"""Tables of the ``dj_cqrs`` app: the master's transactional outbox and the replica's tombstones."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from dj_cqrs.constants import OUTBOX_TABLE


class OutboxEvent(models.Model):
    """A master event written in the same transaction as the change it describes.

    ``data`` holds what is captured at change time (``previous_data``, ``meta``, correlation id,
    and the whole ``instance_data`` of a DELETE); the row state of a SAVE is read when the event is
    published, so the newest committed state is sent. ``published_at`` is set once the broker has
    confirmed the message; published rows are pruned by the relay after the retention period.
    """

    id = models.BigAutoField(primary_key=True)
    created_at = models.DateTimeField()
    cqrs_id = models.CharField(max_length=255)
    signal_type = models.CharField(max_length=8)
    object_pk = models.CharField(max_length=255)
    revision = models.IntegerField(null=True)
    data = models.TextField(default="{}")
    published_at = models.DateTimeField(null=True, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(default="", blank=True)
    #: PostgreSQL transaction id, set by the CQRS_DB_TRIGGERS triggers (one SAVE per row and
    #: transaction).
    txid = models.BigIntegerField(null=True)

    class Meta:
        db_table = OUTBOX_TABLE
        verbose_name = "CQRS outbox event"
        indexes = [
            models.Index(fields=["id"], condition=Q(published_at__isnull=True), name="dj_cqrs_outbox_pending"),
            models.Index(fields=["cqrs_id", "object_pk"], name="dj_cqrs_outbox_object"),
        ]

    def __str__(self) -> str:
        return f"{self.signal_type} {self.cqrs_id} {self.object_pk} rev={self.revision}"


class Tombstone(models.Model):
    """A replica's memory of a deleted object: later SAVEs at or below it are ignored."""

    id = models.BigAutoField(primary_key=True)
    cqrs_id = models.CharField(max_length=255)
    object_pk = models.CharField(max_length=255)
    revision = models.IntegerField()
    #: ``cqrs_updated`` of the DELETE, i.e. the master's clock at deletion.
    deleted_at = models.DateTimeField()
    #: When this replica recorded it (pruning horizon).
    recorded_at = models.DateTimeField(db_index=True)

    class Meta:
        db_table = "dj_cqrs_tombstone"
        verbose_name = "CQRS tombstone"
        constraints = [
            models.UniqueConstraint(fields=["cqrs_id", "object_pk"], name="dj_cqrs_tombstone_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.cqrs_id} {self.object_pk} deleted at rev {self.revision}"
