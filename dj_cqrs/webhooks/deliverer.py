"""The deliverer: a pool of threads, one per subscription being delivered (at most
``CQRS['webhooks']['concurrency']``), so that a slow or dead subscriber delays no other one.

``cqrs_relay`` runs one beside its publishing loop (the broker path never waits for it);
``cqrs_webhooks`` runs one alone. In a process that commits changes, :meth:`Deliverer.start`
also registers a commit listener (:mod:`dj_cqrs.master.commit_listeners`): a commit wakes the
idle threads at once instead of at the next polling ``interval``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from django.db import connections
from django.db.models import F

from dj_cqrs.conf import cqrs_settings
from dj_cqrs.master import commit_listeners
from dj_cqrs.master.relay import outbox_databases
from dj_cqrs.process.lifecycle import Backoff, StopFlag
from dj_cqrs.webhooks import leases, sender, store
from dj_cqrs.webhooks.delivery import Sender, SubscriptionDelivery

logger = logging.getLogger("django-cqrs.webhooks")

RESOLVE_EVERY = 30.0
#: Longest uninterrupted sleep of a thread (how soon it notices a stop).
TICK = 0.25

Key = tuple[str, int]


class Deliverer:
    def __init__(
        self,
        databases: Iterable[str] | None = None,
        interval: float = 1.0,
        concurrency: int | None = None,
        stop: StopFlag | None = None,
        send: Sender = sender.put,
    ) -> None:
        self._fixed = list(databases) if databases else None
        self.databases: list[str] = []
        self._resolved_at = -RESOLVE_EVERY
        self.interval = interval
        self.concurrency = concurrency or int(cqrs_settings.webhooks.concurrency)
        self.stop = stop or StopFlag()
        self.send = send
        self.owner = leases.new_owner()
        self._cond = threading.Condition()
        self._generation = 0
        self._threads: dict[Key, threading.Thread] = {}
        #: When this process last gave each subscription a thread (monotonic): the turns.
        self._started: dict[Key, float] = {}
        self._waiting = 0
        self._main: threading.Thread | None = None
        self.delivered = 0

    # -- waking ------------------------------------------------------------------------------------

    def wake(self, using: str | None = None) -> None:
        """New changes may be in the feed: idle threads look now (cheap; any thread may call it)."""
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def _sleep(self, seen: int, seconds: float) -> None:
        """Sleep up to ``seconds`` unless woken since ``seen`` (a generation) or stopped."""
        deadline = time.monotonic() + seconds
        with self._cond:
            while self._generation == seen and not self.stop.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._cond.wait(min(remaining, TICK))

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> threading.Thread:
        """Run :meth:`run` in a background thread (and listen to this process's commits)."""
        self._main = threading.Thread(target=self.run, name="dj_cqrs-webhooks", daemon=True)
        self._main.start()
        return self._main

    def join(self, timeout: float | None = None) -> None:
        if self._main is not None:
            self._main.join(timeout)

    def run(self) -> int:
        """Schedule subscription threads until stopped; return the items delivered."""
        commit_listeners.add(self.wake)
        backoff = Backoff(0.5, 30.0)
        logger.info("CQRS webhook deliverer %s started", self.owner)
        try:
            while not self.stop.is_set():
                seen = self._generation
                try:
                    self._schedule()
                    backoff.reset()
                except Exception as exc:  # the deliverer's top level: log, back off, keep going
                    delay = backoff.next()
                    logger.warning(
                        "CQRS webhook deliverer: scheduling failed (%r); retrying in %.1fs",
                        exc,
                        delay,
                    )
                    connections.close_all()
                    self.stop.wait(delay)
                    continue
                self._sleep(seen, self.interval)
        finally:
            commit_listeners.remove(self.wake)
            self.wake()
            for thread in list(self._threads.values()):
                thread.join()
            connections.close_all()
            logger.info(
                "CQRS webhook deliverer %s stopped after %s delivery(ies)",
                self.owner,
                self.delivered,
            )
        return self.delivered

    def _resolve(self) -> list[str]:
        if self._fixed is not None:
            return self._fixed
        now = time.monotonic()
        if now - self._resolved_at >= RESOLVE_EVERY:
            self._resolved_at = now
            self.databases = outbox_databases()
        return self.databases

    def _schedule(self) -> None:
        """Start a thread for each active subscription that has none (up to ``concurrency``)."""
        for key, thread in list(self._threads.items()):
            if not thread.is_alive():
                del self._threads[key]
        wanted: list[Key] = []
        for alias in self._resolve():
            ids = (
                store.subscription_model()
                .objects.using(alias)
                .filter(active=True)
                .order_by(F("last_delivered_at").asc(nulls_first=True), "id")
            )
            wanted.extend((alias, int(pk)) for pk in ids.values_list("id", flat=True))
        missing = [key for key in wanted if key not in self._threads]
        # Take turns: the subscription given a thread longest ago (never: first) goes first, so
        # that one with nothing to send, which gives its thread back at once, does not get it
        # again and again ahead of the others (a stable sort: the database order breaks ties).
        missing.sort(key=lambda key: self._started.get(key, float("-inf")))
        free = self.concurrency - len(self._threads)
        self._waiting = max(len(missing) - free, 0)
        for key in missing[: max(free, 0)]:
            self._started[key] = time.monotonic()
            thread = threading.Thread(
                target=self._serve, args=key, name=f"dj_cqrs-webhook-{key[1]}", daemon=True
            )
            self._threads[key] = thread
            thread.start()

    # -- one subscription --------------------------------------------------------------------------

    def _serve(self, using: str, subscription_id: int) -> None:
        """Deliver one subscription while work comes, then give the slot (and the lease) up when
        other subscriptions wait for a thread."""
        delivery = SubscriptionDelivery(using, subscription_id, self.owner, self.stop, self.send)
        backoff = Backoff(1.0, 30.0)
        try:
            while not self.stop.is_set():
                seen = self._generation
                try:
                    result = delivery.run_pass()
                except Exception as exc:  # a failed pass (the database): try again after a pause
                    delay = backoff.next()
                    logger.error(
                        "CQRS webhook subscription %s on %r failed: %r; trying again in %.1fs",
                        subscription_id,
                        using,
                        exc,
                        delay,
                        exc_info=True,
                    )
                    connections.close_all()
                    if self.stop.wait(delay) or self._waiting:
                        return  # stopping, or the slot goes to a waiting subscription
                    continue
                backoff.reset()
                if result is None:
                    return  # paused, removed, or another deliverer holds it
                self.delivered += result.delivered
                if result.more:
                    continue
                if self._waiting:
                    return
                self._sleep(seen, self.interval)
        finally:
            try:
                leases.release(using, subscription_id, self.owner)
            except Exception:  # noqa: BLE001 - the lease expires by itself
                logger.debug("CQRS webhook lease release failed", exc_info=True)
            connections.close_all()
