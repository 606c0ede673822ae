"""The outbox relay (``manage.py cqrs_relay``): publishes what the immediate path could not.

Several relays may run at once on PostgreSQL: each claims rows with ``SELECT ... FOR UPDATE SKIP
LOCKED``, so no event is published by two relays and none waits for another. Rows are published in
id order (the order of their transactions), in batches, with publisher confirms, and marked
published; with RabbitMQ the next batch is claimed and sent while the broker confirms the previous
one (see :meth:`Relay._window`). Published rows older than ``master.outbox_retention`` are pruned. An unpublished event
older than ``master.outbox_alert_age`` is logged at ERROR.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from django.db import connections, transaction
from django.utils import timezone

from dj_cqrs.conf import cqrs_settings
from dj_cqrs.database import Outage, close_broken, is_outage
from dj_cqrs.master import payloads, publisher
from dj_cqrs.master.outbox import event_order, maintenance, publishing
from dj_cqrs.master.outbox.store import outbox_model, read_rows
from dj_cqrs.metrics import recorder
from dj_cqrs.process.lifecycle import Backoff, StopFlag
from dj_cqrs.transport import get_transport

logger = logging.getLogger("django-cqrs.relay")

T = TypeVar("T")

PRUNE_EVERY = 60.0
RESOLVE_EVERY = 30.0
ALERT_EVERY = 60.0
#: Batches published in one transaction when the transport confirms them asynchronously: while
#: the broker confirms one batch, the next is claimed, built and sent. Marks commit per window.
WINDOW = 10
#: The window where rows cannot be locked one by one (SQLite: the first mark takes the database's
#: write lock until the commit, so saves would wait for the whole window).
SMALL_WINDOW = 2


def outbox_databases(aliases: Iterable[str] | None = None, unreachable: dict[str, BaseException] | None = None) -> list[str]:
    """The database aliases that have the outbox table (or the given ones).

    A database that cannot be reached (:func:`dj_cqrs.database.is_outage`) is put in
    ``unreachable`` when given (the relay waits for it), else logged."""
    if aliases:
        return list(aliases)
    found = []
    for alias in connections:
        try:
            with connections[alias].cursor() as cursor:
                tables = connections[alias].introspection.table_names(cursor)
        except Exception as exc:  # noqa: BLE001 - an unreachable database is reported, not fatal
            if unreachable is not None and is_outage(exc):
                unreachable[alias] = exc
                close_broken(alias)
            else:
                logger.warning("Database %r is not reachable for the relay: %r", alias, exc)
            continue
        if outbox_model()._meta.db_table in tables:
            found.append(alias)
    return found


class Relay:
    """Publishes outbox rows of every outbox database.

    A database outage (:func:`dj_cqrs.database.is_outage`: refused, restarting, connection lost)
    is waited out per database: one WARNING when it starts, one INFO when it ends, attempts with
    back-off in between; the other databases are published meanwhile. Nothing is lost: rows stay
    in the outbox until they are published.
    """

    def __init__(
        self,
        databases: Iterable[str] | None = None,
        batch_size: int | None = None,
        interval: float = 1.0,
        min_age: float | None = None,
        stop: StopFlag | None = None,
    ) -> None:
        self._fixed = list(databases) if databases else None
        self._outages: dict[str, Outage] = {}
        #: Databases that could not be reached when the outbox databases were looked for.
        self.unreachable: dict[str, BaseException] = {}
        self.databases = self._resolve()
        self._resolved_at = time.monotonic()
        self.batch_size = batch_size or cqrs_settings.master.outbox_batch_size
        self.interval = interval
        if min_age is None:
            # With outbox_publish = "relay" no process publishes at commit: nothing to wait for.
            min_age = 0.0 if cqrs_settings.master.outbox_publish == "relay" else cqrs_settings.master.outbox_grace
        self.min_age = min_age
        self.stop = stop or StopFlag()
        self.published = 0
        self._last_prune = 0.0
        self._last_alert = 0.0

    def _outage(self, alias: str) -> Outage:
        if alias not in self._outages:
            self._outages[alias] = Outage(f"CQRS relay: database {alias!r}", log=logger)
        return self._outages[alias]

    def _waiting(self, alias: str) -> bool:
        """``alias`` is in an outage and its next attempt is not due yet."""
        outage = self._outages.get(alias)
        return outage is not None and outage.active and not outage.due()

    def _resolve(self) -> list[str]:
        if self._fixed is not None:
            return list(self._fixed)
        unreachable: dict[str, BaseException] = {}
        found = outbox_databases(unreachable=unreachable)
        for alias in connections:
            if alias in unreachable:
                self._outage(alias).failed(unreachable[alias])
            elif alias in self._outages:
                self._outages[alias].recovered()
        self.unreachable = unreachable
        return found

    def refresh_databases(self, force: bool = False) -> None:
        """Look for the outbox databases again (one that was down or not yet migrated when the
        relay started is picked up once it is back)."""
        if self._fixed is not None:
            return
        now = time.monotonic()
        incomplete = set(self.databases) != set(connections)  # an alias was down or unmigrated
        if self.unreachable and all(self._waiting(alias) for alias in self.unreachable):
            incomplete = False  # wait for the back-off before trying the unreachable ones again
        if force or incomplete or now - self._resolved_at >= RESOLVE_EVERY:
            self._resolved_at = now
            found = self._resolve()
            if found != self.databases:
                logger.info("CQRS relay now publishes from %s", ", ".join(found) or "no database")
            self.databases = found

    def waiting(self) -> list[str]:
        """The databases the relay waits for (an outage): their pending rows are not published yet."""
        return [alias for alias, outage in self._outages.items() if outage.active]

    def next_attempt_in(self) -> float:
        """Seconds until the next attempt on a database in an outage (0 when none waits)."""
        now = time.monotonic()
        due = [o.retry_at - now for o in self._outages.values() if o.active]
        return max(min(due), 0.0) if due else 0.0

    def run_once(self) -> int:
        """Publish every pending row once (until a batch comes back short); return how many.

        A database in an outage is skipped (see :meth:`waiting`); the others are published."""
        self.refresh_databases()
        total = 0
        for alias in self.databases:
            if self._waiting(alias):
                continue
            sent = self._unless_outage(alias, self._publish_all)
            if sent is None:
                continue
            total += sent
            if alias in self._outages:
                self._outages[alias].recovered()
        self.published += total
        return total

    def _publish_all(self, alias: str) -> int:
        transport = get_transport()
        if _pipelines(transport):
            return self._publish_pipelined(alias, transport)
        total = 0
        while not self.stop.is_set():
            sent = publishing.claim_and_publish(alias, self.batch_size, min_age=self.min_age)
            total += sent
            if sent < self.batch_size:
                break
        return total

    def _publish_pipelined(self, alias: str, transport: Any) -> int:
        total = 0
        while not self.stop.is_set():
            sent, more = self._window(alias, transport)
            total += sent
            if not more:
                break
        return total

    def _window(self, alias: str, transport: Any) -> tuple[int, bool]:
        """Up to :data:`WINDOW` (:data:`SMALL_WINDOW` without row locks) batches in one
        transaction, each sent before the previous one's confirms are awaited; a batch's rows are
        marked published once the broker confirmed it. Return the rows handled and whether more
        may be pending.

        If anything fails, the transaction rolls back: marks included, so every row of the window
        stays pending and is published again later (replicas ignore a second copy)."""
        model = outbox_model()
        handled, more = 0, True
        unconfirmed: list[Any] = []  # sent, not confirmed yet: failed if the window fails
        try:
            handled, more = self._window_batches(alias, transport, model, unconfirmed)
        except BaseException:
            recorder().publish_failed(unconfirmed)
            raise
        return handled, more

    def _window_batches(self, alias: str, transport: Any, model: Any, unconfirmed: list[Any]) -> tuple[int, bool]:
        handled, more = 0, True
        with transaction.atomic(using=alias):
            publishing._claim_settings(alias)
            after: int | None = None
            window_ids: set[int] = set()
            inflight: tuple[list[int], Any, list[Any]] | None = None
            for _ in range(WINDOW if publishing.supports_skip_locked(alias) else SMALL_WINDOW):
                if self.stop.is_set():
                    more = False
                    break
                rows = read_rows(self._claim(alias, after)[: self.batch_size])
                if not rows:
                    more = False
                    break
                after = rows[-1].pk
                window_ids.update(row.pk for row in rows)
                held = event_order.held_back(alias, rows, window_ids)
                if held:  # an older event of the key is still pending: the next pass sends both
                    rows = [row for row in rows if row.pk not in held]
                built = payloads.payloads_for_rows(rows, alias)
                to_send = [payload for _, payload in built if payload is not None]
                unconfirmed.extend(to_send)
                sent = transport.send_batch(to_send) if to_send else None
                if inflight is not None:
                    _confirmed(alias, model, transport, *inflight, unconfirmed=unconfirmed)
                inflight = ([row.pk for row, _ in built], sent, to_send)
                handled += len(built)
                if len(rows) < self.batch_size:
                    more = False
                    break
            if inflight is not None:
                _confirmed(alias, model, transport, *inflight, unconfirmed=unconfirmed)
        return handled, more

    def _claim(self, alias: str, after: int | None) -> Any:
        """The pending rows (oldest first, locked, skipping rows another publisher holds) after
        ``after``: rows of this window are still pending inside its transaction."""
        qs = outbox_model().objects.using(alias).filter(publishing.publishable())
        if self.min_age > 0:
            qs = qs.filter(created_at__lte=timezone.now() - datetime.timedelta(seconds=self.min_age))
        if after is not None:
            qs = qs.filter(id__gt=after)
        qs = qs.order_by("id")
        if publishing.supports_skip_locked(alias):
            qs = qs.select_for_update(skip_locked=True)
        return qs


    def run_until_done(self) -> int:
        """``cqrs_relay --once``: publish what is pending now, waiting through database outages
        (until every database was published from, or the relay is stopped); return how many."""
        total = self.run_once()
        while self.waiting() and not self.stop.is_set():
            if self.stop.wait(self.next_attempt_in()):
                break
            total += self.run_once()
        return total

    def housekeeping(self) -> None:
        now = time.monotonic()
        if now - self._last_alert >= ALERT_EVERY:
            self._last_alert = now
            threshold = cqrs_settings.master.outbox_alert_age
            for alias in self._available():
                age = self._unless_outage(alias, maintenance.oldest_pending_age)
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
            for alias in self._available():
                pruned = self._unless_outage(alias, lambda alias: maintenance.prune(alias, retention))
                if pruned:
                    logger.info("CQRS outbox on %r: pruned %s published event(s)", alias, pruned)

    def _available(self) -> list[str]:
        return [alias for alias in self.databases if alias not in self._outages or not self._outages[alias].active]

    def _unless_outage(self, alias: str, work: Callable[[str], T]) -> T | None:
        """``work(alias)``; None (and the outage recorded) when the database is unavailable."""
        try:
            return work(alias)
        except Exception as exc:
            if not is_outage(exc):
                raise
            self._outage(alias).failed(exc)
            close_broken(alias)
            return None

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
                self.stop.wait(min(self.interval, self.next_attempt_in()) if self.waiting() else self.interval)
        logger.info("CQRS relay stopped after publishing %s event(s)", self.published)
        return self.published


def _pipelines(transport: Any) -> bool:
    """Whether the relay may keep one batch in flight while it prepares the next: the transport
    sends and confirms batches separately (RabbitMQ) and publishes in batches, unpatched."""
    return (
        callable(getattr(transport, "send_batch", None))
        and callable(getattr(transport, "confirm_batch", None))
        and publisher.publishes_in_batches(transport)
    )


def _confirmed(alias: str, model: Any, transport: Any, ids: list[int], sent: Any, payloads: list[Any], unconfirmed: list[Any]) -> None:
    """Wait for the confirms of a sent batch (re-published with retries where they failed), then
    mark its rows published."""
    if sent is not None:
        transport.confirm_batch(sent)
    del unconfirmed[: len(payloads)]  # the oldest batch in flight is confirmed
    recorder().published(payloads)
    model.objects.using(alias).filter(id__in=ids).update(published_at=timezone.now())
