"""Tables of the ``dj_cqrs`` app: the master's transactional outbox, the replica's tombstones, the
domain events' key sequences, inbox, handler positions and source emissions, the pull cursors of
``cqrs_pull`` and the webhook subscriptions with their parked deliveries."""

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
            models.Index(
                fields=["id"], condition=Q(published_at__isnull=True), name="dj_cqrs_outbox_pending"
            ),
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
            models.UniqueConstraint(
                fields=["cqrs_id", "object_pk"], name="dj_cqrs_tombstone_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.cqrs_id} {self.object_pk} deleted at rev {self.revision}"


class EventSequence(models.Model):
    """The last sequence number of a domain event key (``dj_cqrs.events.emit``). Incremented in
    the emitting transaction: its row lock orders the emitters of one key by commit."""

    key = models.CharField(max_length=255, primary_key=True)
    seq = models.BigIntegerField()

    class Meta:
        db_table = "dj_cqrs_event_sequence"
        verbose_name = "CQRS event key sequence"

    def __str__(self) -> str:
        return f"{self.key} seq={self.seq}"


class InboxEntry(models.Model):
    """A domain event a handler has handled: written in the handler's transaction, so an event is
    handled once per handler however often it is delivered. Pruned after
    ``CQRS['events']['inbox_retention']``."""

    id = models.BigAutoField(primary_key=True)
    handler = models.CharField(max_length=255)
    event_id = models.CharField(max_length=64)
    name = models.CharField(max_length=255)
    key = models.CharField(max_length=255)
    seq = models.BigIntegerField(null=True)
    #: What became of it: ``handled``, or ``ignored_stale`` (an ``ordered`` handler skipped it).
    status = models.CharField(max_length=32, default="handled")
    handled_at = models.DateTimeField(db_index=True)

    class Meta:
        db_table = "dj_cqrs_inbox"
        verbose_name = "CQRS inbox entry"
        verbose_name_plural = "CQRS inbox"
        constraints = [
            models.UniqueConstraint(fields=["handler", "event_id"], name="dj_cqrs_inbox_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.handler} {self.name} {self.event_id}"


class HandlerPosition(models.Model):
    """Where an ``ordered=True`` handler stands in a key: the newest sequence number it handled,
    and the oldest one it failed on and will retry (newer events of the key wait for it)."""

    id = models.BigAutoField(primary_key=True)
    handler = models.CharField(max_length=255)
    key = models.CharField(max_length=255)
    seq = models.BigIntegerField()
    waiting_for = models.BigIntegerField(null=True)
    updated_at = models.DateTimeField()

    class Meta:
        db_table = "dj_cqrs_handler_position"
        verbose_name = "CQRS handler position"
        constraints = [
            models.UniqueConstraint(
                fields=["handler", "key"], name="dj_cqrs_handler_position_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.handler} {self.key} seq={self.seq}"


class SourceEmission(models.Model):
    """A domain event a model event source emitted: each ``(name, key)`` is emitted once."""

    id = models.BigAutoField(primary_key=True)
    name = models.CharField(max_length=255)
    key = models.CharField(max_length=255)
    event_id = models.CharField(max_length=64)
    emitted_at = models.DateTimeField()

    class Meta:
        db_table = "dj_cqrs_event_source"
        verbose_name = "CQRS event source emission"
        constraints = [
            models.UniqueConstraint(fields=["name", "key"], name="dj_cqrs_event_source_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.key}"


class PullCursor(models.Model):
    """Where ``cqrs_pull`` stands in a master's pull feed of one CQRS_ID (replica side): the opaque
    cursor the master returned last, saved in the transaction that applied the page."""

    id = models.BigAutoField(primary_key=True)
    #: The master's pull URL (``https://master/cqrs/``), normalized.
    source = models.CharField(max_length=500)
    cqrs_id = models.CharField(max_length=255)
    cursor = models.TextField(default="", blank=True)
    #: Items applied through this cursor so far.
    items = models.BigIntegerField(default=0)
    #: True once the initial pass over every row is done (only changes follow).
    caught_up = models.BooleanField(default=False)
    updated_at = models.DateTimeField()

    class Meta:
        db_table = "dj_cqrs_pull_cursor"
        verbose_name = "CQRS pull cursor"
        constraints = [
            models.UniqueConstraint(
                fields=["source", "cqrs_id"], name="dj_cqrs_pull_cursor_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.cqrs_id} from {self.source}"


class WebhookSubscription(models.Model):
    """A subscriber that receives changes as HTTP PUTs (master side): the CQRS_IDs and domain
    event name patterns it wants, the secret its deliveries are signed with, and where it stands
    in the change feed (``position``, an outbox id)."""

    id = models.BigAutoField(primary_key=True)
    name = models.CharField(max_length=100, unique=True)
    url = models.URLField(max_length=2000)
    cqrs_ids = models.JSONField(default=list, blank=True)
    event_patterns = models.JSONField(default=list, blank=True)
    secret = models.CharField(max_length=255)
    active = models.BooleanField(default=True)
    #: The last feed position (outbox id) handled: delivered, or parked as failed.
    position = models.BigIntegerField(default=0)
    #: The process delivering to it now, and until when its lease holds.
    lease_owner = models.CharField(max_length=100, default="", blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()
    last_delivered_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(default="", blank=True)

    class Meta:
        db_table = "dj_cqrs_webhook_subscription"
        verbose_name = "CQRS webhook subscription"

    def __str__(self) -> str:
        return f"{self.name} -> {self.url}"


class WebhookDelivery(models.Model):
    """A delivery taken out of the feed's flow: ``failed`` after the configured attempts,
    ``held`` behind a failed earlier change of the same object, ``replay`` when an operator asked
    for it to be sent again."""

    FAILED = "failed"
    HELD = "held"
    REPLAY = "replay"

    id = models.BigAutoField(primary_key=True)
    subscription = models.ForeignKey(
        WebhookSubscription, on_delete=models.CASCADE, related_name="deliveries"
    )
    #: Its position in the change feed (outbox id).
    position = models.BigIntegerField()
    event_id = models.CharField(max_length=64)
    cqrs_id = models.CharField(max_length=255)
    #: The object's primary key, or the domain event's key.
    object_key = models.CharField(max_length=255)
    body = models.TextField()
    #: The change's W3C trace context (``traceparent``, ``tracestate``), sent again with it.
    trace = models.JSONField(null=True, blank=True)
    status = models.CharField(max_length=16, default=FAILED)
    attempts = models.PositiveIntegerField(default=0)
    #: The HTTP status of the last answer (None: no answer: timeout, connection error).
    last_status = models.IntegerField(null=True, blank=True)
    last_error = models.TextField(default="", blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        db_table = "dj_cqrs_webhook_delivery"
        verbose_name = "CQRS webhook delivery"
        verbose_name_plural = "CQRS webhook deliveries"
        indexes = [
            models.Index(fields=["subscription", "status", "id"], name="dj_cqrs_webhook_status"),
            models.Index(
                fields=["subscription", "cqrs_id", "object_key"], name="dj_cqrs_webhook_object"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.status} {self.cqrs_id} {self.object_key} -> {self.subscription_id}"
