"""The kombu consume loop (Redis, AMQP through py-amqp, anything kombu speaks).

Outcomes are settled as on RabbitMQ (see :mod:`dj_cqrs.transport.rabbit_consumer`), with what a
generic kombu broker offers:

* Retry: the body (``retries + 1``) is published to ``<queue>.retry`` with the header
  ``x-cqrs-not-before`` (epoch seconds), then the original is acknowledged. A second consumer, on
  its own channel, reads the retry queue and holds early messages unacknowledged until they are
  due; its prefetch, ``replica.delay_queue_max_size``, bounds what a worker holds, so failing
  messages never block the replica queue. A held message belongs to the broker until it is
  acknowledged: if the worker dies it is redelivered (AMQP: at once; Redis: after the
  ``visibility_timeout`` transport option) with the right ``retries`` counter. On Redis a message
  is never held longer than three quarters of the visibility timeout: one whose delay is longer is
  put back at the tail of the retry queue at that point, so a live worker's messages are not
  restored (duplicated) behind its back.
* Known limit of kombu's Redis transport: it pops a message from the list before it records it
  as unacknowledged, so a worker killed in that instant loses the message in flight. Use an AMQP
  broker (RabbitMQ transport) where that matters.
* Dead letter: the original body goes to ``dead_letter_<queue>`` with the ``x-cqrs-*`` reason
  headers, ``expiration`` (honoured by AMQP brokers) and ``x-cqrs-dead-until`` (epoch seconds,
  for brokers without message TTLs: ``cqrs_dead_letters`` drops letters past it).
* The successor is published before the original is acknowledged: a crash in between can leave
  both (a duplicate, which the revision checks ignore), never neither.
* A successor that cannot be published for any reason but the connection (a body that cannot be
  encoded again, headers the broker client refuses ...): the original body is dead-lettered
  instead (reason ``internal_error``), and the rest of the batch is settled as usual.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from typing import TYPE_CHECKING, Any

from kombu.messaging import Consumer

from dj_cqrs.conf import cqrs_settings
from dj_cqrs.core.messages import HARD_MAX_DELAY, Action, InboundMessage, Outcome
from dj_cqrs.core.names import DEAD_UNTIL_HEADER, DELAY_HEADER, NOT_BEFORE_HEADER, retry_queue_name
from dj_cqrs.core.settlement import (
    dead_letter_ttl,
    failure_headers,
    minimal_failure_headers,
    retry_body,
    settle_failed,
)
from dj_cqrs.exceptions import PublishFailed
from dj_cqrs.process.lifecycle import Backoff, StopFlag, process_stop
from dj_cqrs.registry import replica_registry
from dj_cqrs.replica.batch import handle_batch_through_outages
from dj_cqrs.transport.kombu import connection_errors, new_connection

if TYPE_CHECKING:
    from dj_cqrs.transport.kombu import KombuTransport

logger = logging.getLogger("django-cqrs.transport.kombu")


def _float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    if number is None or number != number:  # NaN
        return None
    return number


def inbound(message: Any) -> InboundMessage:
    raw = message.body
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    elif raw is None:
        raw = b""
    return InboundMessage(
        body=raw,
        routing_key=(message.delivery_info or {}).get("routing_key", "") or "",
        headers=dict(message.headers or {}),
        handle=message,
    )


class KombuConsumer:
    """Consumes this replica service's queue (and its retry queue) until the stop flag is set."""

    def __init__(
        self,
        transport: KombuTransport,
        cqrs_ids: list[str] | None = None,
        stop: StopFlag | None = None,
        max_messages: int | None = None,
        idle_timeout: float | None = None,
    ) -> None:
        self.transport = transport
        self.cqrs_ids = list(cqrs_ids) if cqrs_ids else sorted(replica_registry.models)
        self.stop = stop or process_stop
        self.max_messages = max_messages
        self.idle_timeout = idle_timeout
        self.queue_name: str = cqrs_settings.queue
        self.retry_queue = retry_queue_name(self.queue_name)
        self.dead_letter_queue = cqrs_settings.dead_letter_queue
        self.handled = 0
        self.reconnects = 0
        self.max_held = 0
        self._last_activity = time.monotonic()
        self._buffer: list[tuple[InboundMessage, bool]] = []
        self._held: list[tuple[float, int, float, InboundMessage]] = []
        self._seq = itertools.count()
        self._hold_limit: float | None = None
        #: Errors after which the connection is re-opened (set per connection).
        self._recoverable: tuple[type[BaseException], ...] = (PublishFailed,)

    # -- lifecycle -------------------------------------------------------------------------------

    def _should_stop(self) -> bool:
        if self.stop.is_set():
            return True
        if self.max_messages is not None and self.handled >= self.max_messages:
            return True
        return self.idle_timeout is not None and time.monotonic() - self._last_activity > self.idle_timeout

    def run(self) -> None:
        backoff = Backoff(0.5, 30.0)
        while not self._should_stop():
            conn = new_connection()
            errors = connection_errors(conn) + (PublishFailed,)
            self._recoverable = errors
            try:
                conn.ensure_connection(max_retries=1)
                self._consume(conn, backoff)
            except errors as exc:
                delay = backoff.next()
                logger.warning("Broker connection lost (%r); reconnecting in %.1fs", exc, delay)
                self.reconnects += 1
                if self.stop.wait(delay):
                    break
            except Exception:  # noqa: BLE001 - the worker's top level: log, reconnect, carry on
                delay = backoff.next()
                logger.exception("CQRS consumer error; reconnecting in %.1fs", delay)
                self.reconnects += 1
                if self.stop.wait(delay):
                    break
            finally:
                self._buffer = []
                self._held = []
                try:
                    conn.release()
                except Exception:  # noqa: BLE001 - the connection is being discarded anyway
                    pass

    def _consume(self, conn: Any, backoff: Backoff) -> None:
        queue, retry_queue, dlq = self.transport.queues(self.cqrs_ids)
        main_channel = conn.channel()
        retry_channel = conn.channel()
        queue(main_channel).declare()
        retry_queue(main_channel).declare()
        dlq(main_channel).declare()
        prefetch = max(cqrs_settings.consumer_prefetch_count, cqrs_settings.replica.CQRS_BATCH_SIZE)
        max_held = cqrs_settings.replica.delay_queue_max_size
        visibility = getattr(retry_channel, "visibility_timeout", None)
        self._hold_limit = float(visibility) * 0.75 if isinstance(visibility, (int, float)) and visibility else None
        main = Consumer(main_channel, queues=[queue], on_message=self._on_main, prefetch_count=prefetch)
        retries = Consumer(
            retry_channel, queues=[retry_queue], on_message=self._on_retry, prefetch_count=max_held or 0
        )
        self._buffer = []
        self._held = []
        with main, retries:
            backoff.reset()
            logger.info(
                "CQRS consumer connected: queue=%s cqrs_ids=%s prefetch=%s delay_queue_max_size=%s",
                self.queue_name,
                self.cqrs_ids,
                prefetch,
                max_held,
            )
            self._loop(conn)

    # -- delivery --------------------------------------------------------------------------------

    def _on_main(self, message: Any) -> None:
        self._buffer.append((inbound(message), False))

    def _on_retry(self, message: Any) -> None:
        self._buffer.append((inbound(message), True))

    def _timeout(self) -> float:
        if self._buffer:
            return 0.01
        if self._held:
            return max(0.01, min(0.5, self._held[0][0] - time.time()))
        return 0.5

    def _loop(self, conn: Any) -> None:
        while not self._should_stop():
            try:
                conn.drain_events(timeout=self._timeout())
                self._fill_batch(conn)
            except TimeoutError:
                pass
            now = time.time()
            due: list[InboundMessage] = []
            while self._held and self._held[0][0] <= now:
                due.append(heapq.heappop(self._held)[3])
            self._requeue_overheld(now)
            batch, self._buffer = self._buffer, []
            if batch or due:
                self._last_activity = time.monotonic()
            ready: list[InboundMessage] = list(due)
            for message, from_retry_queue in batch:
                if from_retry_queue:
                    not_before = self._not_before(message, now)
                    if not_before > time.time():
                        heapq.heappush(self._held, (not_before, next(self._seq), time.monotonic(), message))
                        self.max_held = max(self.max_held, len(self._held))
                        continue
                ready.append(message)
            size = cqrs_settings.replica.CQRS_BATCH_SIZE
            for start in range(0, len(ready), size):
                if self.stop.is_set():
                    return
                self._process_many(ready[start : start + size])

    def _fill_batch(self, conn: Any) -> None:
        """Take what else is ready (up to a batch, ``CQRS_BATCH_MAX_WAIT`` at most)."""
        size = cqrs_settings.replica.CQRS_BATCH_SIZE
        deadline = time.monotonic() + cqrs_settings.replica.CQRS_BATCH_MAX_WAIT
        while len(self._buffer) < size:
            left = deadline - time.monotonic()
            conn.drain_events(timeout=max(left, 0.0005))
            if left <= 0:
                break

    def _not_before(self, message: InboundMessage, now: float) -> float:
        value = _float(message.headers.get(NOT_BEFORE_HEADER))
        if value is None:
            return now
        return min(value, now + HARD_MAX_DELAY)

    def _requeue_overheld(self, now: float) -> None:
        """Put messages held for too long back at the tail of the retry queue (Redis only)."""
        if self._hold_limit is None or not self._held:
            return
        limit = time.monotonic() - self._hold_limit
        keep = []
        for entry in self._held:
            if entry[2] < limit:
                message = entry[3]
                self.transport.publish_raw("", self.retry_queue, message.body, dict(message.headers))
                message.handle.ack()
            else:
                keep.append(entry)
        if len(keep) != len(self._held):
            heapq.heapify(keep)
            self._held = keep

    def _process_many(self, messages: list[InboundMessage]) -> None:
        """Apply messages together, then publish successors and acknowledge each (after commit)."""
        outcomes = handle_batch_through_outages(messages, self.stop.wait)  # unsettled when stopped: redelivered
        for message, outcome in zip(messages, outcomes, strict=True):
            if outcome.action is not Action.REQUEUE:
                self.settle(message, outcome)
                self.handled += 1

    # -- outcomes --------------------------------------------------------------------------------

    def settle(self, message: InboundMessage, outcome: Outcome) -> None:
        """Publish the successor of a retried or dead-lettered message, then acknowledge it.

        Raises only for a lost connection: a successor that cannot be published otherwise is
        replaced by a dead letter of the original body."""
        try:
            if outcome.action is Action.RETRY:
                self._publish_retry(message, outcome)
            elif outcome.action is Action.DEAD_LETTER:
                self._publish_dead_letter(message, outcome)
        except self._recoverable:
            raise
        except Exception as exc:  # noqa: BLE001 - one message never holds up its batch
            self._dead_letter_unsettled(message, outcome, exc)
        message.handle.ack()

    def _dead_letter_unsettled(self, message: InboundMessage, outcome: Outcome, exc: BaseException) -> None:
        """Dead-letter the original body of a message whose successor could not be published."""
        fallback = settle_failed(outcome, exc)
        logger.error(
            "CQRS message (routing_key=%r) could not be settled as %s; its original body is dead-lettered: %s",
            message.routing_key,
            outcome.action.value,
            fallback.detail,
            exc_info=exc,
        )
        try:
            self._publish_dead_letter(message, fallback)
        except self._recoverable:
            raise
        except Exception:  # noqa: BLE001 - e.g. the carried headers: reason and error only
            logger.exception("CQRS dead letter with full headers failed; publishing it with the reason only")
            self._publish_dead_letter(message, fallback, minimal=True)

    def _publish_retry(self, message: InboundMessage, outcome: Outcome) -> None:
        assert outcome.payload is not None
        headers = failure_headers(message, outcome)
        headers[DELAY_HEADER] = max(int(round(outcome.delay * 1000)), 0)
        headers[NOT_BEFORE_HEADER] = time.time() + outcome.delay
        self.transport.publish_raw("", self.retry_queue, retry_body(outcome.payload), headers)

    def _publish_dead_letter(self, message: InboundMessage, outcome: Outcome, minimal: bool = False) -> None:
        ttl = dead_letter_ttl()
        headers = minimal_failure_headers(outcome) if minimal else failure_headers(message, outcome)
        if ttl:
            headers[DEAD_UNTIL_HEADER] = time.time() + ttl
        self.transport.publish_raw(
            "", self.dead_letter_queue, message.body, headers, expiration=float(ttl) if ttl else None
        )
