"""One delivery pass over one subscription: replays and unblocked held deliveries first, then the
change feed from the subscription's position, each item PUT in order.

* 2xx acknowledges an item; anything else, a timeout or a connection error is retried with
  exponential back-off (``retry_delay * 2 ** n``, at most ``max_retry_delay``) up to ``attempts``
  tries, the lease renewed meanwhile; then the item is *parked* as a ``failed``
  :class:`~dj_cqrs.models.WebhookDelivery` and the pass moves on.
* Order per object: an item of an object (CQRS_ID and key) that has a parked delivery in the
  subscription is parked as ``held``, never sent ahead of it. Held deliveries go out, in id
  order, once no failed delivery of their object remains (it was replayed, or deleted).
* ``replay`` deliveries (set by ``cqrs_subscriptions replay`` or the admin) go out first, in id
  order: delivered, they are deleted; failing again, they are ``failed`` again.
* A change whose object state was just acknowledged (the same event id, i.e. the same revision:
  the feed serves a SAVE with the object's current state) is not sent twice in a pass.
* At least once: the position is stored after every item, so a deliverer killed mid-pass
  redelivers at most the item in flight (receivers dedupe on ``X-CQRS-Event-Id``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.utils import timezone

from dj_cqrs import encoding, tracing
from dj_cqrs.conf import cqrs_settings
from dj_cqrs.master import feed
from dj_cqrs.process.lifecycle import StopFlag
from dj_cqrs.webhooks import leases, sender, store

logger = logging.getLogger("django-cqrs.webhooks")

Sender = sender.Sender
ObjectKey = tuple[str, str]


class Interrupted(Exception):
    """The pass ends early: the deliverer stops, or the lease was lost. The item in flight is
    neither acknowledged nor parked; whoever holds the subscription next sends it again."""


@dataclass(slots=True)
class PassResult:
    delivered: int = 0
    parked: int = 0
    #: More of the feed may be ready (the pass stopped at its batch limit).
    more: bool = False


def retry_delay(attempt: int) -> float:
    """Seconds to wait after the ``attempt``-th failed try (1-based)."""
    settings = cqrs_settings.webhooks
    return float(
        min(float(settings.retry_delay) * 2 ** (attempt - 1), float(settings.max_retry_delay))
    )


class SubscriptionDelivery:
    """Delivers one subscription while holding its lease (see :mod:`dj_cqrs.webhooks.leases`)."""

    def __init__(
        self,
        using: str,
        subscription_id: int,
        owner: str,
        stop: StopFlag | None = None,
        send: Sender = sender.put,
        max_pages: int = 10,
    ) -> None:
        self.using = using
        self.subscription_id = subscription_id
        self.owner = owner
        self.stop = stop or StopFlag()
        self.send = send
        self.max_pages = max_pages

    # -- entry point -------------------------------------------------------------------------------

    def run_pass(self) -> PassResult | None:
        """Deliver what is due; None when the lease cannot be had (another deliverer holds it, or
        the subscription is paused or gone)."""
        if not leases.acquire(self.using, self.subscription_id, self.owner):
            return None
        try:
            self.sub = (
                store.subscription_model().objects.using(self.using).get(id=self.subscription_id)
            )
        except store.subscription_model().DoesNotExist:
            return None
        result = PassResult()
        try:
            parked = self._redeliver(result)
            self._follow_feed(parked, result)
        except Interrupted as exc:
            logger.info("CQRS webhook %r: pass interrupted (%s)", self.sub.name, exc)
            result.more = False
        return result

    # -- parked deliveries -------------------------------------------------------------------------

    def _deliveries(self) -> Any:
        return (
            store.delivery_model()
            .objects.using(self.using)
            .filter(subscription_id=self.subscription_id)
        )

    def _redeliver(self, result: PassResult) -> set[ObjectKey]:
        """Send the replays and the held deliveries no failure blocks any more; return the objects
        that keep parked deliveries."""
        deliveries = self._deliveries()
        blocked: set[ObjectKey] = set(
            deliveries.filter(status=store.FAILED).values_list("cqrs_id", "object_key")
        )
        due = list(deliveries.filter(status__in=[store.REPLAY, store.HELD]).order_by("id"))
        for row in due:
            key = (row.cqrs_id, row.object_key)
            if key in blocked:
                if row.status == store.REPLAY:  # an earlier change of it failed meanwhile
                    deliveries.filter(id=row.id).update(
                        status=store.HELD, updated_at=timezone.now()
                    )
                continue
            outcome, tries = self._send(
                row.body.encode("utf-8"), row.event_id, row.cqrs_id, row.object_key, row.trace
            )
            if outcome.ok:
                deliveries.filter(id=row.id).delete()
                result.delivered += 1
            else:
                blocked.add(key)
                deliveries.filter(id=row.id).update(
                    status=store.FAILED,
                    attempts=row.attempts + tries,
                    last_status=outcome.status,
                    last_error=outcome.error,
                    updated_at=timezone.now(),
                )
        return set(deliveries.values_list("cqrs_id", "object_key"))

    def _park(
        self,
        item: feed.FeedItem,
        body: bytes,
        status: str,
        tries: int,
        outcome: sender.Outcome | None,
    ) -> None:
        now = timezone.now()
        store.delivery_model().objects.using(self.using).create(
            subscription_id=self.subscription_id,
            position=item.position,
            event_id=item.event_id,
            cqrs_id=item.cqrs_id,
            object_key=item.key,
            body=body.decode("utf-8"),
            trace=item.trace,
            status=status,
            attempts=tries,
            last_status=outcome.status if outcome else None,
            last_error=outcome.error if outcome else "",
            created_at=now,
            updated_at=now,
        )

    # -- the feed ----------------------------------------------------------------------------------

    def _follow_feed(self, parked: set[ObjectKey], result: PassResult) -> None:
        sub = self.sub
        position = int(sub.position)
        batch = int(cqrs_settings.webhooks.batch_size)
        # The feed serves a SAVE with the object's current state: several changes of an object
        # read together carry the same body and event id. One delivery of it is enough.
        acknowledged: dict[ObjectKey, str] = {}
        for _ in range(self.max_pages):
            page = feed.read(
                self.using,
                position,
                cqrs_ids=list(sub.cqrs_ids or []),
                event_patterns=tuple(sub.event_patterns or ()),
                limit=batch,
            )
            for item in page.items:
                if self.stop.is_set():
                    raise Interrupted("stopping")
                body = encoding.dumps_bytes(item.body, allow_nan=True)
                key = (item.cqrs_id, item.key)
                delivered = False
                if acknowledged.get(key) == item.event_id:
                    pass  # the same body was just acknowledged
                elif key in parked:
                    self._park(item, body, store.HELD, 0, None)
                    result.parked += 1
                else:
                    outcome, tries = self._send(
                        body, item.event_id, item.cqrs_id, item.key, item.trace
                    )
                    if outcome.ok:
                        delivered = True
                        acknowledged[key] = item.event_id
                        result.delivered += 1
                    else:
                        self._park(item, body, store.FAILED, tries, outcome)
                        parked.add(key)
                        result.parked += 1
                        logger.error(
                            "CQRS webhook %r: %s %s parked as failed after %s attempt(s): %s",
                            sub.name,
                            item.cqrs_id,
                            item.key,
                            tries,
                            outcome.error,
                            extra={
                                "cqrs_id": item.cqrs_id,
                                "pk": item.key,
                                "event_id": item.event_id,
                            },
                        )
                self._advance(item.position, delivered)
                position = item.position
            if page.position > position:
                self._advance(page.position, False)
            position = page.position
            if not page.has_more:
                result.more = False
                return
        result.more = True

    def _advance(self, position: int, delivered: bool) -> None:
        if not leases.advance(self.using, self.subscription_id, self.owner, position, delivered):
            raise Interrupted("lease lost")

    # -- sending -----------------------------------------------------------------------------------

    def _send(
        self,
        body: bytes,
        event_id: str,
        cqrs_id: str,
        key: str,
        trace: dict[str, str] | None = None,
    ) -> tuple[sender.Outcome, int]:
        """PUT with retries; ``(last outcome, tries)``. Raises :class:`Interrupted`. A change that
        carries a trace context sends it as ``traceparent``/``tracestate`` headers (one client span
        per attempt when tracing is on)."""
        settings = cqrs_settings.webhooks
        attempts = int(settings.attempts)
        timeout = float(settings.timeout)
        outcome = sender.Outcome(None, "not sent")
        for attempt in range(1, attempts + 1):
            outcome = self._attempt(body, event_id, cqrs_id, timeout, trace, attempt)
            if outcome.ok:
                return outcome, attempt
            logger.warning(
                "CQRS webhook %r: %s %s attempt %s/%s failed: %s",
                self.sub.name,
                cqrs_id,
                key,
                attempt,
                attempts,
                outcome.error,
                extra={"cqrs_id": cqrs_id, "pk": key, "event_id": event_id},
            )
            store.subscription_model().objects.using(self.using).filter(
                id=self.subscription_id, lease_owner=self.owner
            ).update(last_error=outcome.error[:1000])
            if attempt < attempts:
                self._wait(retry_delay(attempt))
        return outcome, attempts

    def _attempt(
        self,
        body: bytes,
        event_id: str,
        cqrs_id: str,
        timeout: float,
        trace: dict[str, str] | None,
        attempt: int,
    ) -> sender.Outcome:
        if not trace:
            return self.send(self.sub.url, body, self.sub.secret, event_id, timeout)
        attributes: dict[str, Any] = {
            "http.request.method": "PUT",
            "server.address": urlsplit(self.sub.url).hostname or "",
            "cqrs.id": cqrs_id,
            "cqrs.webhook": self.sub.name,
            "http.request.resend_count": attempt - 1,
        }
        with tracing.outgoing_request(trace, f"{cqrs_id} webhook", attributes) as (headers, span):
            outcome = self.send(self.sub.url, body, self.sub.secret, event_id, timeout, headers)
            if span is not None:
                if outcome.status is not None:
                    span.set_attribute("http.response.status_code", outcome.status)
                if not outcome.ok:
                    span.set_attribute("error.type", str(outcome.status or "connection"))
        return outcome

    def _wait(self, seconds: float) -> None:
        """Sleep, renewing the lease; raise :class:`Interrupted` when stopped or the lease is lost."""
        slice_ = max(float(cqrs_settings.webhooks.lease) / 3, 0.05)
        remaining = seconds
        while remaining > 0:
            step = min(remaining, slice_)
            if self.stop.wait(step):
                raise Interrupted("stopping")
            remaining -= step
            if not leases.renew(self.using, self.subscription_id, self.owner):
                raise Interrupted("lease lost")
