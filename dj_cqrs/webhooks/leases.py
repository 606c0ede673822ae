"""Leases on subscriptions: one deliverer at a time per subscription, across processes and hosts.

A lease is taken and renewed with one conditional ``UPDATE`` (no transaction stays open while
subscribers are called): it succeeds when the subscription is active and its lease is free,
expired, or already this owner's. A deliverer that dies leaves its lease to expire
(``CQRS['webhooks']['lease']`` seconds); another then takes the subscription over.
"""

from __future__ import annotations

import datetime
import os
import socket
import uuid

from django.db.models import Q
from django.utils import timezone

from dj_cqrs.conf import cqrs_settings
from dj_cqrs.webhooks import store


def new_owner() -> str:
    """A name unique to one deliverer: host, process id and a random suffix."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _until() -> datetime.datetime:
    return timezone.now() + datetime.timedelta(seconds=float(cqrs_settings.webhooks.lease))


def acquire(using: str, subscription_id: int, owner: str) -> bool:
    """Take (or renew) the lease of an active subscription; False when another owner holds it,
    or the subscription is paused or gone."""
    now = timezone.now()
    free = Q(lease_until__isnull=True) | Q(lease_until__lt=now) | Q(lease_owner=owner)
    taken = (
        store.subscription_model()
        .objects.using(using)
        .filter(free, id=subscription_id, active=True)
        .update(lease_owner=owner, lease_until=_until())
    )
    return taken == 1


def renew(using: str, subscription_id: int, owner: str) -> bool:
    """Extend a held lease; False when it was lost (expired and taken, or paused)."""
    return acquire(using, subscription_id, owner)


def release(using: str, subscription_id: int, owner: str) -> None:
    """Give the lease up (if still held), so another deliverer need not wait for it to expire."""
    store.subscription_model().objects.using(using).filter(
        id=subscription_id, lease_owner=owner
    ).update(lease_owner="", lease_until=None)


def advance(using: str, subscription_id: int, owner: str, position: int, delivered: bool) -> bool:
    """Store the subscription's new feed position (and renew the lease) while still holding it;
    False when the lease was lost (the position is then left to the new holder)."""
    now = timezone.now()
    values: dict[str, object] = {"position": position, "lease_until": _until()}
    if delivered:
        values["last_delivered_at"] = now
        values["last_error"] = ""
    updated = (
        store.subscription_model()
        .objects.using(using)
        .filter(id=subscription_id, lease_owner=owner, active=True, position__lte=position)
        .update(**values)
    )
    return updated == 1
