"""Managing webhook subscriptions (``manage.py cqrs_subscriptions`` and the admin call these)."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from dj_cqrs.core.event import check_pattern
from dj_cqrs.master import feed
from dj_cqrs.registry import master_registry
from dj_cqrs.webhooks import store

if TYPE_CHECKING:
    from dj_cqrs.models import WebhookDelivery, WebhookSubscription


class SubscriptionError(ValueError):
    """A subscription that cannot be created or found; the message says why."""


def validate_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SubscriptionError(f"URL must be http:// or https:// with a host, got {url!r}")
    return url


def validate_cqrs_ids(cqrs_ids: Iterable[str]) -> list[str]:
    ids = list(dict.fromkeys(cqrs_ids))
    unknown = [cqrs_id for cqrs_id in ids if cqrs_id not in master_registry]
    if unknown:
        known = ", ".join(sorted(master_registry.models)) or "none"
        raise SubscriptionError(
            f"unknown CQRS_ID(s) {', '.join(unknown)}: not a registered master model (registered: {known})"
        )
    return ids


def validate_patterns(patterns: Iterable[str]) -> list[str]:
    try:
        return [check_pattern(pattern) for pattern in dict.fromkeys(patterns)]
    except (TypeError, ValueError) as exc:
        raise SubscriptionError(str(exc)) from None


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def add(
    name: str,
    url: str,
    cqrs_ids: Sequence[str] = (),
    event_patterns: Sequence[str] = (),
    secret: str | None = None,
    using: str = "default",
    from_start: bool = False,
) -> WebhookSubscription:
    """Create an active subscription. It receives the changes committed from now on (or every
    change still in the outbox with ``from_start``). A secret is generated unless given."""
    if not name or len(name) > 100:
        raise SubscriptionError("a name of 1 to 100 characters is required")
    validate_url(url)
    ids = validate_cqrs_ids(cqrs_ids)
    patterns = validate_patterns(event_patterns)
    if not ids and not patterns:
        raise SubscriptionError(
            "subscribe to at least one CQRS_ID (or, for domain events, one event pattern)"
        )
    if secret is not None and not secret:
        raise SubscriptionError("the secret must not be empty")
    if store.subscription_model().objects.using(using).filter(name=name).exists():
        raise SubscriptionError(f"a subscription named {name!r} exists already")
    return (
        store.subscription_model()
        .objects.using(using)
        .create(
            name=name,
            url=url,
            cqrs_ids=ids,
            event_patterns=patterns,
            secret=secret or new_secret(),
            active=True,
            position=0 if from_start else feed.head(using),
            created_at=timezone.now(),
        )
    )


def get(name: str, using: str = "default") -> WebhookSubscription:
    try:
        return store.subscription_model().objects.using(using).get(name=name)
    except store.subscription_model().DoesNotExist:
        raise SubscriptionError(f"no subscription named {name!r}") from None


def listing(using: str = "default") -> list[dict[str, Any]]:
    """Every subscription as a dict (the secret left out), with its parked delivery counts."""
    qs = (
        store.subscription_model()
        .objects.using(using)
        .order_by("name")
        .annotate(
            failed=Count("deliveries", filter=Q(deliveries__status=store.FAILED)),
            held=Count("deliveries", filter=Q(deliveries__status=store.HELD)),
            replay=Count("deliveries", filter=Q(deliveries__status=store.REPLAY)),
        )
    )
    return [
        {
            "name": sub.name,
            "url": sub.url,
            "cqrs_ids": sub.cqrs_ids,
            "event_patterns": sub.event_patterns,
            "active": sub.active,
            "position": sub.position,
            "lag": max(feed.head(using) - sub.position, 0) if sub.active else None,
            "failed": sub.failed,  # type: ignore[attr-defined]
            "held": sub.held,  # type: ignore[attr-defined]
            "replay": sub.replay,  # type: ignore[attr-defined]
            "last_delivered_at": sub.last_delivered_at.isoformat()
            if sub.last_delivered_at
            else None,
            "last_error": sub.last_error,
        }
        for sub in qs
    ]


def remove(name: str, using: str = "default") -> None:
    """Delete a subscription and its parked deliveries."""
    get(name, using).delete()


def set_active(name: str, active: bool, using: str = "default") -> None:
    """Pause (its position stays: resuming delivers what was committed meanwhile) or resume."""
    updated = (
        store.subscription_model().objects.using(using).filter(name=name).update(active=active)
    )
    if not updated:
        raise SubscriptionError(f"no subscription named {name!r}")


def failures(name: str | None = None, using: str = "default") -> QuerySet[WebhookDelivery]:
    """The parked deliveries (failed, held, queued for replay), oldest first."""
    qs = store.delivery_model().objects.using(using).select_related("subscription").order_by("id")
    if name is not None:
        qs = qs.filter(subscription=get(name, using))
    return qs


def replay(name: str, ids: Sequence[int] | None = None, using: str = "default") -> int:
    """Queue failed deliveries of subscription ``name`` for replay (``ids``, or all of them);
    return how many. The deliverer sends them first, then the held ones behind them."""
    return mark_for_replay(
        failures(name, using).filter(**({"id__in": list(ids)} if ids is not None else {}))
    )


def mark_for_replay(deliveries: QuerySet[WebhookDelivery]) -> int:
    return deliveries.filter(status=store.FAILED).update(
        status=store.REPLAY, updated_at=timezone.now()
    )
