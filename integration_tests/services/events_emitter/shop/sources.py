"""The model event source of ``Challenge`` (time-based, as django-spark's example)."""

import datetime

from django.utils import timezone

from dj_cqrs.events import event


def challenge_events(challenge):
    yield event("challenge.created", challenge.pk, {"title": challenge.title})
    if challenge.ends_at - timezone.now() < datetime.timedelta(days=2):
        yield event("challenge.ending", challenge.pk, {"ends_at": challenge.ends_at})
