from __future__ import annotations

import uuid

from django.db import models

from dj_cqrs.master.mixins import MasterMeta
from dj_cqrs.mixins import MasterMixin, RawMasterMixin


class BasicFieldsModel(MasterMixin):
    CQRS_ID = "basic"
    CQRS_TRACKED_FIELDS = "__all__"

    int_field = models.IntegerField(primary_key=True)
    bool_field = models.BooleanField(null=True)
    char_field = models.CharField(max_length=200, null=True)
    date_field = models.DateField(null=True)
    datetime_field = models.DateTimeField(null=True)
    float_field = models.FloatField(null=True)
    url_field = models.URLField(null=True)
    uuid_field = models.UUIDField(null=True)
    decimal_field = models.DecimalField(max_digits=30, decimal_places=15, null=True)


class SimplestModel(MasterMixin):
    CQRS_ID = "simplest"

    name = models.CharField(max_length=200, null=True)


class AllTypesModel(MasterMixin):
    CQRS_ID = "all_types"

    text = models.TextField(default="")
    decimal = models.DecimalField(max_digits=40, decimal_places=20, null=True)
    time = models.TimeField(null=True)
    duration = models.DurationField(null=True)
    binary = models.BinaryField(null=True)
    json = models.JSONField(null=True)
    uuid = models.UUIDField(null=True)


class UUIDPkModel(MasterMixin):
    CQRS_ID = "uuid_pk"

    uid = models.UUIDField(primary_key=True, default=uuid.uuid4)
    name = models.CharField(max_length=100, default="")


class FilteredModel(MasterMixin):
    CQRS_ID = "filtered"

    name = models.CharField(max_length=100)

    def is_sync_instance(self) -> bool:
        return self.name != "skip"


class NoProduceModel(MasterMixin):
    CQRS_ID = "no_produce"
    CQRS_PRODUCE = False

    name = models.CharField(max_length=100, default="")


class TrackedModel(MasterMixin):
    CQRS_ID = "tracked"
    CQRS_TRACKED_FIELDS = ["status", "owner"]

    status = models.CharField(max_length=20, default="new")
    owner = models.ForeignKey("Publisher", null=True, on_delete=models.SET_NULL)
    other = models.CharField(max_length=20, default="")


class FieldsSubsetModel(MasterMixin):
    CQRS_ID = "fields_subset"
    CQRS_FIELDS = ["id", "public"]

    public = models.CharField(max_length=20, default="")
    secret = models.CharField(max_length=20, default="")


class CustomDeleteModel(MasterMixin):
    CQRS_ID = "custom_delete"

    name = models.CharField(max_length=20, default="")

    def get_custom_cqrs_delete_data(self) -> dict[str, str]:
        return {"name": self.name}


class MetaModel(MasterMixin):
    CQRS_ID = "meta_model"

    name = models.CharField(max_length=20, default="")

    def get_cqrs_meta(self, **kwargs):
        return {"signal": str(kwargs["signal_type"]), "name": self.name}


class RawMaster(RawMasterMixin):
    CQRS_ID = "raw_master"

    name = models.CharField(max_length=20, default="")


MasterMeta.register(RawMaster)


class Publisher(models.Model):
    name = models.CharField(max_length=100)


class Author(MasterMixin):
    CQRS_ID = "author"
    CQRS_SERIALIZER = "tests.apps.master_app.serializers.AuthorSerializer"

    id = models.IntegerField(primary_key=True)
    name = models.CharField(max_length=100)
    publisher = models.ForeignKey(Publisher, null=True, on_delete=models.SET_NULL)

    @classmethod
    def relate_cqrs_serialization(cls, queryset):
        return queryset.select_related("publisher").prefetch_related("books")


class Book(models.Model):
    title = models.CharField(max_length=100)
    author = models.ForeignKey(Author, related_name="books", on_delete=models.CASCADE)


class FKModel(MasterMixin):
    CQRS_ID = "fk_model"

    publisher = models.ForeignKey(Publisher, null=True, on_delete=models.SET_NULL)
    name = models.CharField(max_length=20, default="")


class CounterModel(MasterMixin):
    """Fields updated with F() and other expressions."""

    CQRS_ID = "counter"
    CQRS_TRACKED_FIELDS = "__all__"

    name = models.CharField(max_length=50, default="c")
    count = models.IntegerField(default=0)
    hits = models.IntegerField(default=0)


#: Primary keys whose ``HookedModel.cqrs_sync`` override ran.
HOOKED_SYNCS: list[int] = []


class HookedModel(MasterMixin):
    """Overrides ``to_cqrs_dict``, ``get_tracked_fields_data`` and ``cqrs_sync``."""

    CQRS_ID = "hooked"
    CQRS_TRACKED_FIELDS = ["name"]

    name = models.CharField(max_length=50, default="")
    hidden = models.BooleanField(default=False)

    def to_cqrs_dict(self, using=None, sync=False):
        data = super().to_cqrs_dict(using=using, sync=sync)
        data["label"] = f"<{self.name}>"
        data["sync"] = sync
        return data

    def get_tracked_fields_data(self):
        data = super().get_tracked_fields_data()
        return {"fresh": True} if data is None else {**data, "extra": "yes"}

    def cqrs_sync(self, using=None, queue=None):
        HOOKED_SYNCS.append(self.pk)
        if self.hidden:
            return False
        return super().cqrs_sync(using=using, queue=queue)


class HookedAuthor(Author):
    """A ``CQRS_SERIALIZER`` model whose ``to_cqrs_dict`` override calls the default one."""

    CQRS_ID = "hooked_author"

    class Meta:
        proxy = True

    def to_cqrs_dict(self, using=None, sync=False):
        data = super().to_cqrs_dict(using=using, sync=sync)
        data["shout"] = self.name.upper()
        return data
