"""Replica models of the differential project (valid under both packages)."""

from django.db import models

from dj_cqrs.mixins import ReplicaMixin


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
