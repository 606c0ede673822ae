"""The outbox relay (``manage.py cqrs_relay``): publishes what the immediate path could not.

Several relays may run at once on PostgreSQL: each claims rows with ``SELECT ... FOR UPDATE SKIP
LOCKED``, so no event is published by two relays and none waits for another. Rows are published in
id order (the order of their transactions), in batches, with publisher confirms, and marked
published; published rows older than ``master.outbox_retention`` are pruned. An unpublished event
older than ``master.outbox_alert_age`` is logged at ERROR.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from django.db import connections

from dj_cqrs.conf import cqrs_settings
from dj_cqrs.master import outbox
from dj_cqrs.replica.lifecycle import Backoff, StopFlag

logger = logging.getLogger("django-cqrs.relay")

PRUNE_EVERY = 60.0
RESOLVE_EVERY = 30.0
ALERT_EVERY = 60.0


def outbox_databases(aliases: Iterable[str] | None = None) -> list[str]:
    """The database aliases that have the outbox table (or the given ones)."""
    from dj_cqrs.models import OutboxEvent

    if aliases:
        return list(aliases)
    found = []
    for alias in connections:
        try:
            with connections[alias].cursor() as cursor:
                tables = connections[alias].introspection.table_names(cursor)
        except Exception as exc:  # noqa: BLE001 - an unreachable database is reported, not fatal
            logger.warning("Database %r is not reachable for the relay: %r", alias, exc)
            continue
        if OutboxEvent._meta.db_table in tables:
            found.append(alias)
    return found


class Relay:
    def __init__(
        self,
        databases: Iterable[str] | None = None,
        batch_size: int | None = None,
        interval: float = 1.0,
        min_age: float | None = None,
        stop: StopFlag | None = None,
    ) -> None:
        self._fixed = list(databases) if databases else None
        self.databases = outbox_databases(databases)
        self._resolved_at = time.monotonic()
        self.batch_size = batch_size or cqrs_settings.master.outbox_batch_size
        self.interval = interval
        self.min_age = cqrs_settings.master.outbox_grace if min_age is None else min_age
        self.stop = stop or StopFlag()
        self.published = 0
        self._last_prune = 0.0
        self._last_alert = 0.0

    def refresh_databases(self, force: bool = False) -> None:
        """Look for the outbox databases again (one that was down or not yet migrated when the
        relay started is picked up once it is back)."""
        if self._fixed is not None:
            return
        now = time.monotonic()
        incomplete = set(self.databases) != set(connections)  # an alias was down or unmigrated
        if force or incomplete or now - self._resolved_at >= RESOLVE_EVERY:
            self._resolved_at = now
            found = outbox_databases()
            if found != self.databases:
                logger.info("CQRS relay now publishes from %s", ", ".join(found) or "no database")
            self.databases = found

    def run_once(self) -> int:
        """Publish every pending row once (until a batch comes back short); return how many."""
        self.refresh_databases()
        total = 0
        for alias in self.databases:
            while not self.stop.is_set():
                sent = outbox.claim_and_publish(alias, self.batch_size, min_age=self.min_age)
                total += sent
                if sent < self.batch_size:
                    break
        self.published += total
        return total

    def housekeeping(self) -> None:
        now = time.monotonic()
        if now - self._last_alert >= ALERT_EVERY:
            self._last_alert = now
            threshold = cqrs_settings.master.outbox_alert_age
            for alias in self.databases:
                age = outbox.oldest_pending_age(alias)
                if threshold is not None and age is not None and age > threshold:
                    logger.error(
                        "CQRS outbox on %r holds an unpublished event %.0fs old (alert at %ss):"
                        " is the broker reachable?",
                        alias,
                        age,
                        threshold,
                    )
        retention = cqrs_settings.master.outbox_retention
        if retention is not None and now - self._last_prune >= PRUNE_EVERY:
            self._last_prune = now
            for alias in self.databases:
                pruned = outbox.prune(alias, retention)
                if pruned:
                    logger.info("CQRS outbox on %r: pruned %s published event(s)", alias, pruned)

    def run(self) -> int:
        """Loop until stopped; return the number of events published."""
        logger.info("CQRS relay started on %s", ", ".join(self.databases) or "no database")
        backoff = Backoff(0.5, 30.0)
        while not self.stop.is_set():
            try:
                sent = self.run_once()
                self.housekeeping()
                backoff.reset()
            except Exception as exc:  # the relay's top level: log, back off, keep going
                delay = backoff.next()
                logger.error("CQRS relay pass failed (%r); retrying in %.1fs", exc, delay, exc_info=True)
                for alias in self.databases:
                    if not connections[alias].in_atomic_block:
                        connections[alias].close()
                try:
                    self.housekeeping()  # the age alert matters most while publishing fails
                except Exception:  # noqa: BLE001 - the database may be what fails
                    logger.debug("CQRS relay housekeeping failed", exc_info=True)
                self.stop.wait(delay)
                continue
            if sent == 0:
                self.stop.wait(self.interval)
        logger.info("CQRS relay stopped after publishing %s event(s)", self.published)
        return self.published
