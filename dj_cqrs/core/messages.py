"""A received message and what the replica decided about it.

A transport turns each delivery into an :class:`InboundMessage`, hands a batch of them to a
:class:`ConsumeHandler` and carries out the :class:`Outcome` it returns for each: acknowledge,
retry later, dead-letter, or keep unacknowledged for a redelivery (``REQUEUE``: the replica
database is unreachable).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from dj_cqrs.core.event import EventPayload
from dj_cqrs.core.payload import TransportPayload

#: No retry waits longer than this, whatever a model hook answers (RabbitMQ TTLs are 32-bit ms).
HARD_MAX_DELAY = 7 * 24 * 3600.0


class Action(enum.Enum):
    ACK = "ack"
    RETRY = "retry"
    DEAD_LETTER = "dead_letter"
    REQUEUE = "requeue"


@dataclasses.dataclass(frozen=True)
class InboundMessage:
    """A message as a transport received it."""

    body: bytes
    routing_key: str = ""
    headers: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: Opaque transport handle (delivery tag, kombu message ...).
    handle: Any = None


@dataclasses.dataclass(frozen=True)
class Outcome:
    action: Action
    #: Why it was not applied: a :class:`~dj_cqrs.core.reasons.Reason` (``invalid_json``,
    #: ``expired``, ``max_retries`` ...), its value written as is in the ``x-cqrs-reason`` header.
    reason: str = ""
    #: Human-readable detail (exception type and message, or what is wrong with the body).
    detail: str = ""
    #: Seconds before the retry (RETRY only).
    delay: float = 0.0
    #: The decoded message: a model event, or a domain event (:mod:`dj_cqrs.core.event`).
    payload: TransportPayload | EventPayload | None = None
    exception: BaseException | None = None
    #: A :class:`~dj_cqrs.core.reasons.Status` (``applied``, ``ignored_stale`` ...) for the log
    #: line and metrics (ACK only).
    status: str = ""
    #: The reason of the last failure when ``reason`` is ``max_retries``.
    failure: str = ""
    #: The ``cqrs_id`` read from a malformed body, if any (for the log line).
    raw_cqrs_id: str = ""


class ConsumeHandler(Protocol):
    """What a consume loop calls with each batch: one :class:`Outcome` per message, in order.

    The handler decides everything (apply, retry with which delay, dead-letter, wait for the
    database); the transport only carries the outcomes out. ``wait(seconds)`` sleeps while the
    transport keeps its broker connection alive and returns True when the worker is asked to
    stop; ``tick()`` is called now and then during a long batch for the same purpose. Messages
    still waiting for the database when the worker stops keep a ``REQUEUE`` outcome (the
    transport leaves them unacknowledged); with ``wait=None`` they are returned as ``REQUEUE`` at
    once (a transport that holds nothing, e.g. the in-memory one).
    """

    def __call__(
        self,
        messages: Sequence[InboundMessage],
        wait: Callable[[float], bool] | None,
        tick: Callable[[], None] | None = None,
    ) -> list[Outcome]: ...


__all__ = ["HARD_MAX_DELAY", "Action", "ConsumeHandler", "InboundMessage", "Outcome"]
