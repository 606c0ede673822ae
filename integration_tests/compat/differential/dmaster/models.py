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
