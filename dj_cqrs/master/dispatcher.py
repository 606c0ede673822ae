"""Publishes committed outbox events right after commit.

``master.outbox_publish``:

* ``"thread"`` (default for broker transports): a per-process background thread publishes events
  in batches with publisher confirms and marks them published, so ``save()`` does not wait for the
  broker. Events still queued when the process dies stay in the outbox (relay, sweep).
* ``"sync"`` (default for in-memory transports and SQLite databases): publish in the committing
  thread; a failure is logged and the event stays in the outbox.
* ``"relay"``: never publish here; ``manage.py cqrs_relay`` does it.

After publishing, a bounded sweep (``outbox_sweep_limit`` rows at most every
``outbox_sweep_interval`` seconds) also publishes older rows left behind by an earlier failure, so
a service without a relay heals as long as it keeps committing.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
from typing import Any

from django.db import connections

from dj_cqrs.conf import cqrs_settings
from dj_cqrs.core.event import AnyPayload
from dj_cqrs.exceptions import BrokerRefused
from dj_cqrs.master.outbox import maintenance, publishing
from dj_cqrs.master.publisher import publishes_in_batches
from dj_cqrs.transport import get_transport

logger = logging.getLogger("django-cqrs.outbox")

_STOP = object()
PRUNE_EVERY = 600.0
#: Work items the publishing thread may have waiting; beyond, commits flag a backlog instead.
MAX_QUEUED = 20
#: While commits keep coming (the last batch began less than BUSY seconds ago: more than 50
#: commits a second), the thread waits up to LINGER seconds for more events before publishing a
#: batch: fewer statements and confirms per event under load, no added latency otherwise.
LINGER = 0.005
BUSY = 0.02


def _background_allowed() -> bool:
    """Only transports that opt in, and that take batches as they are, publish from the thread
    (a patched ``produce`` must see each event in the committing thread)."""
    transport = get_transport()
    return getattr(transport, "background_publish", False) is True and publishes_in_batches(transport)


def _reaches_a_broker() -> bool:
    """Whether publishing goes over the network (the RabbitMQ and kombu transports): only then
    does a failure make committing threads pause; in-process transports are tried every time."""
    return bool(getattr(get_transport(), "supports_fail_fast", False))


class Dispatcher:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[Any] | None = None
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self._last_sweep: dict[str, float] = {}
        self._last_prune: dict[str, float] = {}
        self._atexit_registered = False
        #: Work items queued for the thread (bounded: beyond MAX_QUEUED, or while the circuit is
        #: open after a failure, commits only flag a backlog, drained from the outbox itself).
        self._queued = 0
        #: Each work item gets the next ticket. A claim drains everything committed before it
        #: started, so the items of earlier tickets are not published again after it.
        self._tickets = 0
        self._claimed_before: dict[str, int] = {}
        self._backlog: set[str] = set()
        self._open_until: dict[str, float] = {}
        self._failures: dict[str, int] = {}

    # -- entry point -----------------------------------------------------------------------------

    def mode(self, using: str | None = None) -> str:
        mode = cqrs_settings.master.outbox_publish
        if mode == "thread" and not _background_allowed():
            return "sync"
        if mode == "thread" and using is not None and connections[using].vendor == "sqlite":
            # One writer at a time: a second connection marking rows published would only wait
            # for (or block) the application's own writes.
            return "sync"
        return str(mode)

    def submit(self, using: str, items: list[tuple[int, AnyPayload | None]], claim: bool = False) -> None:
        """Publish committed outbox rows, in commit order: ``(outbox_id, payload)`` items, the
        payload built at commit or ``None`` (read from the database); with ``claim``, whatever is
        pending (rows written by triggers)."""
        mode = self.mode(using)
        if mode == "relay" or not (items or claim):
            return
        if mode == "sync":
            if self.circuit_open(using) and _reaches_a_broker():
                # The broker failed a moment ago: the committing thread does not try again yet
                # (the events are safe in the outbox; the sweep or the relay publishes them).
                return
            if claim:
                self.claim(using)
            if items and not self.publish(using, items, fail_fast=True):
                return
            self.maybe_sweep(using)
            return
        work = self._ensure_thread()
        with self._lock:
            if self._queued >= MAX_QUEUED or self.circuit_open(using):
                # The publisher is behind (or the broker failed a moment ago): the events are
                # safe in the outbox; hold no snapshot of them, drain the outbox later instead.
                self._backlog.add(using)
                if self._queued:
                    return
                item: Any = (using, None, self._tickets)  # wake the thread up: it drains the backlog
            else:
                item = (using, None if claim else list(items), self._tickets)
            self._tickets += 1
            self._queued += 1
        work.put(item)

    # -- work ------------------------------------------------------------------------------------

    def publish(
        self,
        using: str,
        items: list[tuple[int, AnyPayload | None]],
        own_connection: bool = False,
        fail_fast: bool = False,
    ) -> bool:
        """Publish items in batches; False (and the circuit opened) after a failure.
        ``own_connection``: called from the publishing thread, whose connection does nothing else;
        ``fail_fast``: one attempt without retries or sleeps (the committing thread)."""
        batch = cqrs_settings.master.outbox_batch_size
        for start in range(0, len(items), batch):
            chunk = items[start : start + batch]
            try:
                publishing.publish_items(using, chunk, own_connection=own_connection, fail_fast=fail_fast)
            except Exception as exc:  # the events are safe in the outbox; the relay or sweep retries
                maintenance.note_failure(using, [outbox_id for outbox_id, _ in chunk], exc)
                self._reset_connection(using)
                self._failed(using, exc, len(chunk))
                return False
        self._recovered(using)
        return True

    def circuit_open(self, using: str) -> bool:
        """Whether publishing for ``using`` pauses after a failure (committing threads skip it)."""
        return time.monotonic() < self._open_until.get(using, 0.0)

    def _failed(self, using: str, exc: BaseException, count: int) -> None:
        """Open the circuit: for a growing pause (up to a minute) commits leave their events to
        the outbox. One log line per outage, not one per commit."""
        failures = self._failures.get(using, 0) + 1
        self._failures[using] = failures
        pause = 60.0 if isinstance(exc, BrokerRefused) else min(60.0, 2.0 ** min(failures, 6))
        self._open_until[using] = time.monotonic() + pause
        with self._lock:
            self._backlog.add(using)
        if failures > 1:
            logger.debug("CQRS outbox publish failed again (%s in a row): %r", failures, exc)
        elif isinstance(exc, BrokerRefused):
            logger.error(
                "CQRS: the broker refused the publisher (%s); %s event(s) stay in the outbox and are"
                " published once the credentials or permissions are fixed",
                exc,
                count,
            )
        else:
            logger.warning(
                "CQRS: publishing failed (%s); %s event(s) stay in the outbox and are published when"
                " the broker is back (cqrs_relay, or the sweep of later commits); commits stop trying"
                " for a while",
                exc,
                count,
            )

    def reset_circuit(self) -> None:
        """Forget past failures (tests)."""
        self._failures.clear()
        self._open_until.clear()

    def _recovered(self, using: str) -> None:
        failures = self._failures.pop(using, None)
        if failures:
            logger.info("CQRS: publishing works again after %s failed attempt(s)", failures)

    def claim(self, using: str) -> None:
        """Publish what is pending in the outbox, oldest first, until it is empty."""
        with self._lock:
            self._claimed_before[using] = self._tickets
        batch = cqrs_settings.master.outbox_batch_size
        try:
            while publishing.claim_and_publish(using, batch, min_age=0) >= batch:
                pass
        except Exception as exc:  # the events are safe in the outbox; the relay or sweep retries
            self._reset_connection(using)
            self._failed(using, exc, 0)
        else:
            self._recovered(using)

    def maybe_sweep(self, using: str) -> None:
        limit = cqrs_settings.master.outbox_sweep_limit
        interval = cqrs_settings.master.outbox_sweep_interval
        if not limit:
            return
        now = time.monotonic()
        if now - self._last_sweep.get(using, 0.0) < interval or (self.circuit_open(using) and _reaches_a_broker()):
            return
        if self._queued and threading.current_thread() is self._thread:
            return  # the thread is behind: what the sweep would take is still queued for it
        self._last_sweep[using] = now
        try:
            sent = publishing.claim_and_publish(using, limit, min_age=cqrs_settings.master.outbox_grace)
        except Exception as exc:  # noqa: BLE001 - the sweep is opportunistic
            logger.warning("CQRS outbox sweep failed: %r", exc)
            self._reset_connection(using)
            return
        if sent:
            logger.info("CQRS outbox sweep published %s older event(s)", sent)
        self._maybe_prune(using)

    def _maybe_prune(self, using: str) -> None:
        """Services without a relay keep the outbox small too: a bounded prune now and then."""
        retention = cqrs_settings.master.outbox_retention
        now = time.monotonic()
        if retention is None or now - self._last_prune.get(using, 0.0) < PRUNE_EVERY:
            return
        self._last_prune[using] = now
        try:
            maintenance.prune(using, retention, chunk=1000, max_rows=1000)
        except Exception as exc:  # noqa: BLE001 - pruning is housekeeping
            logger.warning("CQRS outbox prune failed: %r", exc)
            self._reset_connection(using)

    @staticmethod
    def _reset_connection(using: str) -> None:
        conn = connections[using]
        if conn.in_atomic_block:
            return
        try:
            if conn.connection is not None and not conn.is_usable():
                conn.close()
        except Exception:  # noqa: BLE001
            conn.close()

    # -- background thread -----------------------------------------------------------------------

    def _ensure_thread(self) -> queue.SimpleQueue[Any]:
        with self._lock:
            if self._pid != os.getpid() or self._thread is None or not self._thread.is_alive():
                self._pid = os.getpid()
                self._queue = queue.SimpleQueue()
                self._queued = 0  # a new thread: nothing is waiting for it yet
                self._thread = threading.Thread(target=self._run, args=(self._queue,), name="dj_cqrs-outbox", daemon=True)
                self._thread.start()
                if not self._atexit_registered:
                    atexit.register(self.shutdown)
                    self._atexit_registered = True
            assert self._queue is not None
            return self._queue

    def _run(self, work: queue.SimpleQueue[Any]) -> None:
        batch_size = cqrs_settings.master.outbox_batch_size
        last_batch = 0.0
        try:
            while True:
                try:
                    item = work.get(timeout=1.0)
                except queue.Empty:
                    self._drain_backlog()
                    continue
                if item is _STOP:
                    break
                with self._lock:
                    self._queued -= 1
                now = time.monotonic()
                linger_until = now + LINGER if now - last_batch < BUSY else now
                last_batch = now
                items: dict[str, list[tuple[int, list[tuple[int, AnyPayload | None]]]]] = {}
                claims: set[str] = set()
                count = 0
                stop = False
                while item is not None:
                    using, batch, ticket = item
                    items.setdefault(using, [])
                    if batch is None:
                        claims.add(using)
                    else:
                        items[using].append((ticket, batch))
                        count += len(batch)
                    if count >= batch_size:
                        break
                    try:
                        # Busy (commits keep coming): wait a moment for more, so that one
                        # round of statements and confirms serves several commits.
                        wait = linger_until - time.monotonic()
                        item = work.get(timeout=wait) if wait > 0 else work.get_nowait()
                    except queue.Empty:
                        item = None
                    if item is _STOP:
                        stop = True
                        item = None
                    elif item is not None:
                        with self._lock:
                            self._queued -= 1
                # No close_old_connections() here: with CONN_MAX_AGE=0 it would reconnect on every
                # batch. The connection is closed when a batch fails on it (see _reset_connection).
                for using in claims:
                    self.claim(using)
                for using, tickets in items.items():
                    claimed = self._claimed_before.get(using, -1)
                    batch = [entry for ticket, part in tickets if ticket >= claimed for entry in part]
                    if batch and not self.circuit_open(using):
                        self.publish(using, batch, own_connection=True)
                    elif batch:
                        with self._lock:
                            self._backlog.add(using)
                    self.maybe_sweep(using)
                self._drain_backlog()
                if stop:
                    break
        finally:
            for alias in connections:
                try:
                    connections[alias].close()
                except Exception:  # noqa: BLE001
                    pass

    def _drain_backlog(self) -> None:
        """Publish the outbox backlog of databases whose circuit is closed again."""
        now = time.monotonic()
        with self._lock:
            ready = {using for using in self._backlog if now >= self._open_until.get(using, 0.0)}
            self._backlog -= ready
        for using in ready:
            self.claim(using)

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until the background thread has handled what was submitted (tests, shutdown)."""
        with self._lock:
            thread, work = self._thread, self._queue
            if thread is None or work is None or not thread.is_alive() or self._pid != os.getpid():
                return True
            self._thread = None
            self._queue = None
        work.put(_STOP)
        thread.join(timeout)
        return not thread.is_alive()

    def shutdown(self) -> None:
        self.drain(timeout=5.0)


dispatcher = Dispatcher()
