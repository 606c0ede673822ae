"""Replica models of the differential project (valid under both packages)."""

from django.db import models

from dj_cqrs.metas import ReplicaMeta
from dj_cqrs.mixins import RawReplicaMixin, ReplicaMixin


class AuthorRef(ReplicaMixin):
    CQRS_ID = "diff_author"

    id = models.IntegerField(primary_key=True)
    name = models.CharField(max_length=100)


class BookRef(ReplicaMixin):
    CQRS_ID = "diff_book"

    id = models.IntegerField(primary_key=True)
    title = models.CharField(max_length=100)
    author = models.ForeignKey(AuthorRef, null=True, on_delete=models.SET_NULL, db_constraint=False)
    price = models.DecimalField(max_digits=10, decimal_places=2, default=0)
    published = models.DateField(null=True)


# -- replica code written against django-cqrs's hooks (issue 10, replica-side gaps) -------------

#: What the overrides and handlers below received, for the scenarios to read (cleared by them).
SEEN: list[dict] = []


class BookOverride(ReplicaMixin):
    """A replica whose ``cqrs_create``/``cqrs_update`` read the master's keys (``author``)."""

    CQRS_ID = "diff_book_override"

    id = models.IntegerField(primary_key=True)
    title = models.CharField(max_length=100)
    author = models.ForeignKey(AuthorRef, null=True, on_delete=models.SET_NULL, db_constraint=False)

    @classmethod
    def cqrs_create(cls, sync, mapped_data, previous_data=None, meta=None):
        SEEN.append({"hook": "create", "keys": sorted(mapped_data), "previous_data": previous_data, "sync": sync})
        return cls.objects.create(
            id=mapped_data["id"],
            title=mapped_data["title"],
            author_id=mapped_data["author"],
            cqrs_revision=mapped_data["cqrs_revision"],
            cqrs_updated=mapped_data["cqrs_updated"],
        )

    def cqrs_update(self, sync, mapped_data, previous_data=None, meta=None):
        SEEN.append({"hook": "update", "keys": sorted(mapped_data), "previous_data": previous_data, "sync": sync})
        self.title = mapped_data["title"]
        self.author_id = mapped_data["author"]
        self.cqrs_revision = mapped_data["cqrs_revision"]
        self.cqrs_updated = mapped_data["cqrs_updated"]
        self.save()
        return self


class BookSuper(ReplicaMixin):
    """Overrides that record what they get, then call the default implementations."""

    CQRS_ID = "diff_book_super"

    id = models.IntegerField(primary_key=True)
    title = models.CharField(max_length=100)
    author = models.ForeignKey(AuthorRef, null=True, on_delete=models.SET_NULL, db_constraint=False)

    @classmethod
    def cqrs_create(cls, sync, mapped_data, previous_data=None, meta=None):
        SEEN.append({"hook": "create", "keys": sorted(mapped_data)})
        return super().cqrs_create(sync, mapped_data, previous_data=previous_data, meta=meta)

    def cqrs_update(self, sync, mapped_data, previous_data=None, meta=None):
        SEEN.append({"hook": "update", "keys": sorted(mapped_data)})
        return super().cqrs_update(sync, mapped_data, previous_data=previous_data, meta=meta)


class KwargsHandler(RawReplicaMixin):
    """A handler taking ``previous_data`` and ``**kwargs``: records the keyword arguments."""

    CQRS_ID = "diff_kwargs_handler"

    @classmethod
    def cqrs_save(cls, master_data, previous_data=None, **kwargs):
        SEEN.append({"hook": "save", "previous_data": previous_data, "kwargs": sorted(kwargs)})
        return True

    @classmethod
    def cqrs_delete(cls, master_data, **kwargs):
        SEEN.append({"hook": "delete", "kwargs": sorted(kwargs)})
        return True


class NoSyncHandler(RawReplicaMixin):
    """A handler without ``sync`` (and without ``**kwargs``)."""

    CQRS_ID = "diff_nosync_handler"

    @classmethod
    def cqrs_save(cls, master_data, previous_data=None):
        SEEN.append({"hook": "save", "previous_data": previous_data})
        return True

    @classmethod
    def cqrs_delete(cls, master_data):
        SEEN.append({"hook": "delete"})
        return True


class MetaHandler(RawReplicaMixin):
    """``CQRS_META = True``: records the keyword arguments."""

    CQRS_ID = "diff_meta_handler"
    CQRS_META = True

    @classmethod
    def cqrs_save(cls, master_data, **kwargs):
        SEEN.append({"hook": "save", "kwargs": sorted(kwargs), "meta": kwargs.get("meta")})
        return True

    @classmethod
    def cqrs_delete(cls, master_data, **kwargs):
        SEEN.append({"hook": "delete", "kwargs": sorted(kwargs), "meta": kwargs.get("meta")})
        return True


class MutatingHandler(RawReplicaMixin):
    """Changes the data it is given."""

    CQRS_ID = "diff_mutating_handler"

    @classmethod
    def cqrs_save(cls, master_data, previous_data=None, **kwargs):
        master_data.pop("title", None)
        master_data["added"] = 1
        if previous_data is not None:
            previous_data.clear()
        return True

    @classmethod
    def cqrs_delete(cls, master_data, **kwargs):
        master_data.clear()
        return True


for _handler in (KwargsHandler, NoSyncHandler, MetaHandler, MutatingHandler):
    ReplicaMeta.register(_handler)


class NoDbRef(ReplicaMixin):
    """``CQRS_NO_DB_OPERATIONS`` without its own ``cqrs_save``/``cqrs_delete``."""

    CQRS_ID = "diff_nodb"
    CQRS_NO_DB_OPERATIONS = True

    id = models.IntegerField(primary_key=True)
    name = models.CharField(max_length=100, default="")


class GenreRef(ReplicaMixin):
    CQRS_ID = "diff_genre"

    id = models.IntegerField(primary_key=True)
    name = models.CharField(max_length=100)


class ShelfRef(ReplicaMixin):
    """Protects its genre: deleting a genre that a shelf uses is a database error."""

    CQRS_ID = "diff_shelf"

    id = models.IntegerField(primary_key=True)
    genre = models.ForeignKey(GenreRef, on_delete=models.PROTECT)
