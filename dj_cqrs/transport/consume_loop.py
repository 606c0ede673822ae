"""The consume loop every broker transport shares; a broker implements only its primitives.

:class:`ConsumeLoop` runs until its stop flag is set (SIGTERM/SIGINT in a ``cqrs_consume``
worker), ``max_messages`` were settled or nothing arrived for ``idle_timeout`` seconds:

* connect (:meth:`~ConsumeLoop.open`: connection, topology, consumers) and, when the connection
  is lost (:attr:`~ConsumeLoop.recoverable` errors) or anything else fails, close it, wait with
  back-off (0.5 s doubling to 30 s) and connect again; the broker redelivers what was not
  acknowledged;
* fill a batch: wait for a first delivery (:meth:`~ConsumeLoop.poll`), then for more, up to
  ``replica.CQRS_BATCH_SIZE`` messages or ``replica.CQRS_BATCH_MAX_WAIT`` seconds (not when
  messages come one at a time: a lone message after a lone message is applied at once);
* hand the batch to the handler the caller passed in (the replica decides: apply, retry with a
  delay, dead-letter, or wait for its database, see :class:`~dj_cqrs.core.messages.ConsumeHandler`),
  keeping the broker connection alive meanwhile (:meth:`~ConsumeLoop.wait`,
  :meth:`~ConsumeLoop.service`);
* settle each outcome after the handler's database transactions committed: publish the
  successor of a retried or dead-lettered message, then acknowledge it. A successor that cannot
  be published for any reason but the connection is replaced by a dead letter of the original
  body (reason ``internal_error``), so one message never holds up the others of its batch.
  ``REQUEUE`` outcomes (still waiting for the database when asked to stop) stay unacknowledged.

A transactional broker (:attr:`~ConsumeLoop.acks_batches`) acknowledges a batch at once and
commits its publishes and acknowledgements together (:meth:`~ConsumeLoop.commit`); otherwise
each message is acknowledged right after its successor is published (a crash in between can
leave both, a duplicate the revision checks ignore, never neither).
"""

from __future__ import annotations

import abc
import logging
import time
from typing import ClassVar

from dj_cqrs.conf import cqrs_settings
from dj_cqrs.core.handlers import binding_keys, default_handler
from dj_cqrs.core.messages import Action, ConsumeHandler, InboundMessage, Outcome
from dj_cqrs.core.settlement import settle_failed
from dj_cqrs.exceptions import ConfigurationError
from dj_cqrs.process.lifecycle import Backoff, StopFlag, process_stop
from dj_cqrs.registry import replica_registry
from dj_cqrs.transport.observe import dead_lettered, handle_observed


class ConsumeLoop(abc.ABC):
    """Consumes this replica service's queue until the stop flag is set; see the module docstring.

    ``handler`` decides what becomes of each batch (default: the one the ``dj_cqrs`` app installed,
    :func:`dj_cqrs.core.handlers.default_handler`); ``cqrs_ids`` are the ``CQRS_ID`` s bound to the
    queue (default: every replica model). ``max_messages`` and ``idle_timeout`` end the loop early
    (tests, one-shot runs).
    """

    #: The logger of the broker's transport.
    logger: ClassVar[logging.Logger]
    #: How the broker is named in the reconnect warning.
    broker_name: ClassVar[str]
    #: Whether a batch is acknowledged at once and committed with its publishes (AMQP ``tx``).
    acks_batches: ClassVar[bool] = False
    #: ``messaging.system`` of the consumer's trace spans (a broker may set it per connection).
    messaging_system: str = "rabbitmq"

    def __init__(
        self,
        cqrs_ids: list[str] | None = None,
        stop: StopFlag | None = None,
        max_messages: int | None = None,
        idle_timeout: float | None = None,
        handler: ConsumeHandler | None = None,
    ) -> None:
        routed = default_handler()
        self.handler = handler if handler is not None else routed
        self.cqrs_ids = list(cqrs_ids) if cqrs_ids else sorted(replica_registry.models)
        self.stop = stop or process_stop
        self.max_messages = max_messages
        self.idle_timeout = idle_timeout
        self.queue: str = cqrs_settings.queue
        #: Routing keys bound for the routes of the default handler (domain event patterns), when
        #: this loop runs it.
        self.route_binding_keys: list[str] = (
            binding_keys(self.queue) if self.handler is routed else []
        )
        self.dead_letter_queue: str = cqrs_settings.dead_letter_queue
        self.batch_size: int = cqrs_settings.replica.CQRS_BATCH_SIZE
        self.batch_max_wait: float = cqrs_settings.replica.CQRS_BATCH_MAX_WAIT
        #: Messages settled (acknowledged) so far.
        self.handled = 0
        #: Connections re-opened after a failure.
        self.reconnects = 0
        #: Errors after which the connection is re-opened (a broker may set them per connection).
        self.recoverable: tuple[type[BaseException], ...] = ()
        self._last_activity = time.monotonic()
        #: Messages in the last batch taken: a trickle (one message at a time) is applied at
        #: once instead of waiting for a batch that does not come.
        self._last_taken = 0

    # -- the broker's primitives -----------------------------------------------------------------

    @abc.abstractmethod
    def open(self) -> None:
        """Connect, declare the topology and start consuming (sets :attr:`recoverable`)."""

    @abc.abstractmethod
    def close(self, error: BaseException | None = None) -> None:
        """Drop the connection (never raises); ``error`` is the failure that ended it, if any."""

    @abc.abstractmethod
    def poll(self, timeout: float) -> None:
        """Service the connection for at most ``timeout`` seconds, buffering what is delivered."""

    @abc.abstractmethod
    def poll_timeout(self) -> float:
        """How long the first poll of a batch may wait for a delivery."""

    @abc.abstractmethod
    def buffered(self) -> int:
        """How many delivered messages wait in the buffer."""

    @abc.abstractmethod
    def take(self) -> list[InboundMessage]:
        """The buffered messages ready to be handled (a broker may hold some back)."""

    @abc.abstractmethod
    def publish_retry(self, message: InboundMessage, outcome: Outcome) -> None:
        """Publish the next attempt of ``message`` (``outcome.delay`` seconds from now)."""

    @abc.abstractmethod
    def publish_dead_letter(
        self, message: InboundMessage, outcome: Outcome, minimal: bool = False
    ) -> None:
        """Publish the original body of ``message`` as a dead letter (``minimal``: reason and
        error headers only)."""

    @abc.abstractmethod
    def ack(self, messages: list[InboundMessage], whole_batch: bool) -> None:
        """Acknowledge ``messages`` (``whole_batch``: they are all the messages of their batch)."""

    def commit(self) -> None:  # noqa: B027 - only a transactional broker has something to do
        """Make the publishes and acknowledgements of a batch final (transactional brokers)."""

    def service(self) -> None:  # noqa: B027 - only a broker with heartbeats has something to do
        """Keep the connection alive while a batch is being applied (heartbeats)."""

    def wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` (keeping the connection alive); True if asked to stop."""
        return self.stop.wait(seconds)

    # -- the loop --------------------------------------------------------------------------------

    def run(self) -> None:
        backoff = Backoff(0.5, 30.0)
        while not self.should_stop():
            try:
                self.open()
                backoff.reset()
                self.consume()
            except ConfigurationError:
                # The settings do not fit the broker (e.g. dj_cqrs.E100/E101 from the topology):
                # reconnecting cannot help; the worker stops with the message (exit code 78) and
                # cqrs_consume with it.
                self.close()
                raise
            except Exception as exc:  # noqa: BLE001 - the worker's top level: log, reconnect, carry on
                delay = backoff.next()
                if isinstance(exc, self.recoverable):
                    self.logger.warning(
                        "%s connection lost (%r); reconnecting in %.1fs",
                        self.broker_name,
                        exc,
                        delay,
                    )
                else:
                    self.logger.exception("CQRS consumer error; reconnecting in %.1fs", delay)
                self.close(exc)
                self.reconnects += 1
                if self.stop.wait(delay):
                    break
        self.close()

    def should_stop(self) -> bool:
        if self.stop.is_set():
            return True
        if self.max_messages is not None and self.handled >= self.max_messages:
            return True
        return (
            self.idle_timeout is not None
            and time.monotonic() - self._last_activity > self.idle_timeout
        )

    def mark_active(self) -> None:
        """Something was received: the idle timeout starts again."""
        self._last_activity = time.monotonic()

    def consume(self) -> None:
        """Fill batches and process them until asked to stop."""
        while not self.should_stop():
            self.fill_batch()
            ready = self.take()
            if ready:
                self.mark_active()
                self._last_taken = len(ready)
            for start in range(0, len(ready), self.batch_size):
                if start and self.stop.is_set():
                    # A batch already received is applied (as before the loop was shared); the
                    # rest stays unacknowledged and the broker redelivers it.
                    return
                self.process(ready[start : start + self.batch_size])

    def fill_batch(self) -> None:
        """Wait for a delivery, then for more: up to a batch, ``CQRS_BATCH_MAX_WAIT`` at most.
        A lone message after a lone message (a trickle) does not wait: waiting would only add
        its latency; as soon as messages come faster than they are applied they arrive together
        and batches form again."""
        self.poll(self.poll_timeout())
        buffered = self.buffered()
        if not buffered or buffered >= self.batch_size or (buffered == 1 and self._last_taken == 1):
            return
        deadline = time.monotonic() + self.batch_max_wait
        while self.buffered() < self.batch_size and (left := deadline - time.monotonic()) > 0:
            self.poll(left)

    def process(self, batch: list[InboundMessage]) -> None:
        """Hand a batch to the handler, then settle every outcome but ``REQUEUE``."""
        outcomes = handle_observed(
            self.handler,
            batch,
            self.wait,
            self.service,
            queue=self.queue,
            system=self.messaging_system,
        )
        settled: list[InboundMessage] = []
        for message, outcome in zip(batch, outcomes, strict=True):
            if outcome.action is Action.REQUEUE:
                continue
            self.settle(message, outcome)
            settled.append(message)
            if not self.acks_batches:
                self.ack([message], whole_batch=False)
                self.handled += 1
        if self.acks_batches:
            self.ack(settled, whole_batch=len(settled) == len(batch))
            self.handled += len(settled)
            self.commit()

    def settle(self, message: InboundMessage, outcome: Outcome) -> None:
        """Publish the successor of a retried or dead-lettered message.

        Raises only for a lost connection, or for a configuration error (the broker refused to
        declare a retry queue: dj_cqrs.E101), which no other message could get past either: a
        successor that cannot be published otherwise is replaced by a dead letter of the original
        body."""
        try:
            if outcome.action is Action.RETRY:
                self.publish_retry(message, outcome)
            elif outcome.action is Action.DEAD_LETTER:
                self.publish_dead_letter(message, outcome)
        except ConfigurationError:
            raise
        except self.recoverable:
            raise
        except Exception as exc:  # noqa: BLE001 - one message never holds up its batch
            self.dead_letter_unsettled(message, outcome, exc)

    def dead_letter_unsettled(
        self, message: InboundMessage, outcome: Outcome, exc: BaseException
    ) -> None:
        """Dead-letter the original body of a message whose successor could not be published."""
        fallback = settle_failed(outcome, exc)
        dead_lettered(fallback)
        self.logger.error(
            "CQRS message (routing_key=%r) could not be settled as %s; its original body is dead-lettered: %s",
            message.routing_key,
            outcome.action.value,
            fallback.detail,
            exc_info=exc,
        )
        try:
            self.publish_dead_letter(message, fallback)
        except self.recoverable:
            raise
        except Exception:  # noqa: BLE001 - e.g. the carried headers: reason and error only
            self.logger.exception(
                "CQRS dead letter with full headers failed; publishing it with the reason only"
            )
            self.publish_dead_letter(message, fallback, minimal=True)


__all__ = ["ConsumeLoop"]
