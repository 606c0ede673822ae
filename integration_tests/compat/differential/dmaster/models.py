"""Master models of the differential project (valid under both packages)."""

from django.db import models

from dj_cqrs.mixins import MasterMixin


class Author(MasterMixin):
    CQRS_ID = "diff_author"

    name = models.CharField(max_length=100)


class Counter(MasterMixin):
    """An integer updated with F() expressions."""

    CQRS_ID = "diff_counter"
    CQRS_TRACKED_FIELDS = "__all__"

    name = models.CharField(max_length=50, default="c")
    count = models.IntegerField(default=0)


class Book(MasterMixin):
    """Tracked fields, a ForeignKey and a few value types."""

    CQRS_ID = "diff_book"
    CQRS_TRACKED_FIELDS = ("title", "author", "price")

    title = models.CharField(max_length=100)
    author = models.ForeignKey(Author, null=True, on_delete=models.SET_NULL)
    price = models.DecimalField(max_digits=10, decimal_places=2, default=0)
    published = models.DateField(null=True)


class QuietCounter(MasterMixin):
    """F() expressions on a model that publishes nothing (``CQRS_PRODUCE = False``)."""

    CQRS_ID = "diff_quiet_counter"
    CQRS_PRODUCE = False

    count = models.IntegerField(default=0)


class NarrowCounter(MasterMixin):
    """F() expressions on a field left out of ``CQRS_FIELDS``."""

    CQRS_ID = "diff_narrow_counter"
    CQRS_FIELDS = ("id", "name")
    CQRS_TRACKED_FIELDS = ("name", "hits")

    name = models.CharField(max_length=50, default="n")
    hits = models.IntegerField(default=0)


#: Primary keys whose ``Gadget.cqrs_sync`` override ran (scenarios clear it first).
GADGET_SYNCS: list[int] = []


class Gadget(MasterMixin):
    """Overrides ``to_cqrs_dict``, ``get_tracked_fields_data`` and ``cqrs_sync``."""

    CQRS_ID = "diff_gadget"
    CQRS_TRACKED_FIELDS = ("name",)

    name = models.CharField(max_length=50)
    hidden = models.BooleanField(default=False)

    def to_cqrs_dict(self, using=None, sync=False):
        data = super().to_cqrs_dict(using=using, sync=sync)
        data["label"] = f"<{self.name}>"
        return data

    def get_tracked_fields_data(self):
        data = super().get_tracked_fields_data()
        if data is None:
            return {"fresh": True}
        return {**data, "extra": "yes"}

    def cqrs_sync(self, using=None, queue=None):
        GADGET_SYNCS.append(self.pk)
        if self.hidden:
            return False
        return super().cqrs_sync(using=using, queue=queue)


class Picky(MasterMixin):
    """``is_sync_instance()`` False for some rows."""

    CQRS_ID = "diff_picky"

    name = models.CharField(max_length=50)
    visible = models.BooleanField(default=True)

    def is_sync_instance(self):
        return self.visible


class Stamped(MasterMixin):
    """``get_cqrs_meta`` describing the object's state (the meta scenarios)."""

    CQRS_ID = "diff_stamped"

    name = models.CharField(max_length=50)
    status = models.CharField(max_length=20, default="new")

    def get_cqrs_meta(self, **kwargs):
        data = kwargs.get("instance_data") or {}
        return {
            "kw": sorted(kwargs),
            "sig": str(kwargs.get("signal_type")),
            "data_name": data.get("name"),
            "data_status": data.get("status"),
            "obj_name": self.name,
        }


class Ticket(MasterMixin):
    """An explicit primary key, declared after the mixin's fields (key order of ``instance_data``)."""

    CQRS_ID = "diff_ticket"

    number = models.IntegerField(primary_key=True)
    title = models.CharField(max_length=50, default="")
