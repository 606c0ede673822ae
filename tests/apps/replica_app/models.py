from __future__ import annotations

from django.db import models

from dj_cqrs.metas import ReplicaMeta
from dj_cqrs.mixins import RawReplicaMixin, ReplicaMixin


class BasicFieldsModelRef(ReplicaMixin):
    CQRS_ID = "basic"

    int_field = models.IntegerField(primary_key=True)
    bool_field = models.BooleanField(null=True)
    char_field = models.CharField(max_length=200, null=True)
    date_field = models.DateField(null=True)
    datetime_field = models.DateTimeField(null=True)
    float_field = models.FloatField(null=True)
    url_field = models.URLField(null=True)
    uuid_field = models.UUIDField(null=True)
    decimal_field = models.DecimalField(max_digits=30, decimal_places=15, null=True)


class SimplestModelRef(ReplicaMixin):
    CQRS_ID = "simplest"

    id = models.IntegerField(primary_key=True)
    name = models.CharField(max_length=200, null=True)


class AllTypesModelRef(ReplicaMixin):
    CQRS_ID = "all_types"

    id = models.IntegerField(primary_key=True)
    text = models.TextField(default="")
    decimal = models.DecimalField(max_digits=40, decimal_places=20, null=True)
    time = models.TimeField(null=True)
    duration = models.DurationField(null=True)
    binary = models.BinaryField(null=True)
    json = models.JSONField(null=True)
    uuid = models.UUIDField(null=True)


class UUIDPkModelRef(ReplicaMixin):
    CQRS_ID = "uuid_pk"

    uid = models.UUIDField(primary_key=True)
    name = models.CharField(max_length=100, default="")


class MappedModelRef(ReplicaMixin):
    CQRS_ID = "tracked"
    CQRS_MAPPING = {"id": "ext_id", "status": "state", "owner": "owner_id"}

    ext_id = models.IntegerField(primary_key=True)
    state = models.CharField(max_length=20)
    owner_id = models.IntegerField(null=True)
    last_previous = models.JSONField(null=True)

    def cqrs_update(self, sync, mapped_data, previous_data=None, meta=None):
        self.last_previous = previous_data
        return super().cqrs_update(sync, mapped_data, previous_data=previous_data, meta=meta)


class AuthorRef(ReplicaMixin):
    CQRS_ID = "author"
    CQRS_CUSTOM_SERIALIZATION = True
    CQRS_META = True

    id = models.IntegerField(primary_key=True)
    name = models.CharField(max_length=100)
    publisher_name = models.CharField(max_length=100, null=True)
    book_titles = models.JSONField(default=list)

    @classmethod
    def cqrs_create(cls, sync, mapped_data, previous_data=None, meta=None):
        return cls.objects.create(**cls._fields_from(mapped_data))

    def cqrs_update(self, sync, mapped_data, previous_data=None, meta=None):
        for key, value in self._fields_from(mapped_data).items():
            setattr(self, key, value)
        self.save()
        return self

    @staticmethod
    def _fields_from(data):
        publisher = data.get("publisher") or {}
        return {
            "id": data["id"],
            "name": data["name"],
            "publisher_name": publisher.get("name"),
            "book_titles": [b["title"] for b in data.get("books", [])],
            "cqrs_revision": data["cqrs_revision"],
            "cqrs_updated": data["cqrs_updated"],
        }


class OnlyDirectSyncModelRef(ReplicaMixin):
    CQRS_ID = "filtered"
    CQRS_ONLY_DIRECT_SYNCS = True

    id = models.IntegerField(primary_key=True)
    name = models.CharField(max_length=100)


class FKModelRef(ReplicaMixin):
    CQRS_ID = "fk_model"

    id = models.IntegerField(primary_key=True)
    publisher = models.ForeignKey("PublisherRef", null=True, on_delete=models.DO_NOTHING, db_constraint=False)
    name = models.CharField(max_length=20, default="")


class PublisherRef(models.Model):
    id = models.IntegerField(primary_key=True)
    name = models.CharField(max_length=100, default="")


class CustomDeleteRef(ReplicaMixin):
    CQRS_ID = "custom_delete"
    CQRS_META = True

    id = models.IntegerField(primary_key=True)
    name = models.CharField(max_length=20, default="")

    deleted_custom: list = []

    @classmethod
    def cqrs_delete(cls, master_data, meta=None):
        cls.deleted_custom.append(master_data.get("custom"))
        return super().cqrs_delete(master_data, meta=meta)


class FlakyModelRef(ReplicaMixin):
    """Fails ``fail_times`` times, then applies."""

    CQRS_ID = "simplest_flaky"

    id = models.IntegerField(primary_key=True)
    name = models.CharField(max_length=200, null=True)

    fail_times = 0
    attempts = 0

    @classmethod
    def cqrs_save(cls, master_data, previous_data=None, sync=False, meta=None):
        FlakyModelRef.attempts += 1
        if FlakyModelRef.attempts <= FlakyModelRef.fail_times:
            raise RuntimeError(f"flaky failure {FlakyModelRef.attempts}")
        return super().cqrs_save(master_data, previous_data=previous_data, sync=sync, meta=meta)


class EventLog(RawReplicaMixin):
    """A non-model replica: records what it receives."""

    CQRS_ID = "meta_model"
    CQRS_META = True

    events: list = []

    @classmethod
    def cqrs_save(cls, master_data, previous_data=None, sync=False, meta=None):
        cls.events.append(("save", master_data, previous_data, sync, meta))
        return True

    @classmethod
    def cqrs_delete(cls, master_data, meta=None):
        cls.events.append(("delete", master_data, None, False, meta))
        return True


ReplicaMeta.register(EventLog)


class RecordingQuerySet(models.QuerySet):
    """Records ``select_for_update()`` calls (SQLite ignores the lock itself)."""

    calls: list = []

    def select_for_update(self, *args, **kwargs):
        RecordingQuerySet.calls.append(self.model.__name__)
        return super().select_for_update(*args, **kwargs)


class SelectForUpdateRef(ReplicaMixin):
    CQRS_ID = "select_for_update"
    CQRS_SELECT_FOR_UPDATE = True

    id = models.IntegerField(primary_key=True)
    name = models.CharField(max_length=20, default="")

    objects = RecordingQuerySet.as_manager()

    class Meta:
        base_manager_name = "objects"


class AlwaysFailing(RawReplicaMixin):
    """A non-model replica whose handlers always raise."""

    CQRS_ID = "always_failing"
    attempts: list = []

    @classmethod
    def cqrs_save(cls, master_data, previous_data=None, sync=False):
        cls.attempts.append(master_data)
        raise ValueError("always failing")

    @classmethod
    def cqrs_delete(cls, master_data):
        cls.attempts.append(master_data)
        return False


ReplicaMeta.register(AlwaysFailing)


class MappedBatchRef(ReplicaMixin):
    """A mapped replica the batched path applies set-based (no overridden hooks)."""

    CQRS_ID = "mapped_batch"
    CQRS_MAPPING = {"id": "ext_id", "title": "label"}

    ext_id = models.IntegerField(primary_key=True)
    label = models.CharField(max_length=30, null=True)
    extra = models.IntegerField(null=True, default=7)


class NoteRef(models.Model):
    """Rows that cascade when their ``MappedBatchRef`` is deleted."""

    parent = models.ForeignKey(MappedBatchRef, on_delete=models.CASCADE)


class BatchTreeRef(ReplicaMixin):
    """A replica with a relation to itself (a delete cascades inside its own batch group)."""

    CQRS_ID = "batch_tree"

    id = models.IntegerField(primary_key=True)
    name = models.CharField(max_length=20, default="")
    parent = models.ForeignKey("self", null=True, on_delete=models.CASCADE)


class BatchAuthorRef(ReplicaMixin):
    CQRS_ID = "batch_author"

    id = models.IntegerField(primary_key=True)
    name = models.CharField(max_length=20, default="")


class BatchBookRef(ReplicaMixin):
    """A child replica: its rows reference (and cascade with) ``BatchAuthorRef`` rows."""

    CQRS_ID = "batch_book"

    id = models.IntegerField(primary_key=True)
    author = models.ForeignKey(BatchAuthorRef, on_delete=models.CASCADE)
