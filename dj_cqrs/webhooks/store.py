"""Lazy access to the webhook models (importing this package needs no app registry)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dj_cqrs.models import WebhookDelivery, WebhookSubscription

#: ``WebhookDelivery.status`` values.
FAILED = "failed"
HELD = "held"
REPLAY = "replay"


def subscription_model() -> type[WebhookSubscription]:
    from dj_cqrs.models import WebhookSubscription

    return WebhookSubscription


def delivery_model() -> type[WebhookDelivery]:
    from dj_cqrs.models import WebhookDelivery

    return WebhookDelivery
