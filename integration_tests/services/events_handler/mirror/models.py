"""A replica model next to the handlers (IT_SINK_REPLICA=1): one queue serves both."""

from django.db import models

from dj_cqrs.mixins import ReplicaMixin


class MirrorItem(ReplicaMixin):
    CQRS_ID = "it_mirror"

    id = models.IntegerField(primary_key=True)
    name = models.CharField(max_length=100, default="")
