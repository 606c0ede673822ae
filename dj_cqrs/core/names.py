"""The names on the wire, written once: routing and binding keys, queue names, header names.

They are django-cqrs's where django-cqrs has one (see ``docs/wire-format.md``): a master publishes
an event with the routing key ``<cqrs_id>`` (broadcast to every replica bound to it) or
``cqrs.<queue>.<cqrs_id>`` (a direct sync to one replica queue); a replica queue is bound with
both for each of its ``cqrs_id``; its dead-letter queue is ``dead_letter_<queue>``, bound with
``cqrs.<dead letter queue>.<cqrs_id>``. The retry queues and the ``x-cqrs-*`` headers are ours.

Only the standard library is imported here (:mod:`dj_cqrs.conf` reads the dead-letter queue
name from this module).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

#: Prefix of every header dj_cqrs writes.
HEADER_PREFIX = "x-cqrs-"
#: The master's routing key, kept by retries and dead letters (a direct sync stays direct).
ROUTING_KEY_HEADER = "x-cqrs-routing-key"
REASON_HEADER = "x-cqrs-reason"
FAILURE_HEADER = "x-cqrs-failure"
ERROR_HEADER = "x-cqrs-error"
EXCEPTION_HEADER = "x-cqrs-exception"
RETRIES_HEADER = "x-cqrs-retries"
FIRST_FAILURE_HEADER = "x-cqrs-first-failure"
LAST_FAILURE_HEADER = "x-cqrs-last-failure"
WORKER_HEADER = "x-cqrs-worker"
QUEUE_HEADER = "x-cqrs-queue"
DELAY_HEADER = "x-cqrs-delay-ms"
#: Epoch seconds before which a retry must not be applied (brokers without message TTLs).
NOT_BEFORE_HEADER = "x-cqrs-not-before"
#: Epoch seconds after which a dead letter is discarded (brokers without message TTLs).
DEAD_UNTIL_HEADER = "x-cqrs-dead-until"
#: Set on a re-published message whose foreign headers could not be encoded again (dropped).
DROPPED_HEADERS_HEADER = "x-cqrs-dropped-headers"

#: Headers describing one failure; dropped when a dead letter is retried by hand.
FAILURE_HEADERS = frozenset(
    {
        REASON_HEADER,
        FAILURE_HEADER,
        ERROR_HEADER,
        EXCEPTION_HEADER,
        RETRIES_HEADER,
        FIRST_FAILURE_HEADER,
        LAST_FAILURE_HEADER,
        WORKER_HEADER,
        QUEUE_HEADER,
        DELAY_HEADER,
        NOT_BEFORE_HEADER,
        DEAD_UNTIL_HEADER,
    }
)

#: Headers RabbitMQ adds when it dead-letters a message (our delay queues); never carried on.
BROKER_DEATH_HEADER = "x-death"
BROKER_DEATH_HEADER_PREFIXES = ("x-first-death-", "x-last-death-")

_DIRECT_PREFIX = "cqrs."
_DELAY_QUEUE_INFIX = ".retry."


def direct_routing_key(queue: str, cqrs_id: str) -> str:
    """``cqrs.<queue>.<cqrs_id>``: addresses one queue (a direct sync, a dead-letter binding)."""
    return f"{_DIRECT_PREFIX}{queue}.{cqrs_id}"


class Addressed(Protocol):
    """What a routing key is made of (a :class:`~dj_cqrs.core.payload.TransportPayload`)."""

    @property
    def cqrs_id(self) -> str: ...

    @property
    def queue(self) -> str | None: ...


def routing_key_for(payload: Addressed) -> str:
    """The routing key of an event: direct to its ``queue`` when it has one (``cqrs_sync
    --queue``), else the broadcast ``cqrs_id``."""
    if payload.queue:
        return direct_routing_key(payload.queue, payload.cqrs_id)
    return payload.cqrs_id


def direct_queue(routing_key: str, cqrs_id: str) -> str | None:
    """The queue a ``cqrs.<queue>.<cqrs_id>`` routing key addresses (None for a broadcast)."""
    suffix = "." + cqrs_id
    if routing_key.startswith(_DIRECT_PREFIX) and routing_key.endswith(suffix):
        queue = routing_key[len(_DIRECT_PREFIX) : -len(suffix)]
        return queue or None
    return None


def original_routing_key(routing_key: str, headers: Mapping[str, Any] | None) -> str:
    """The routing key the master used: retries and dead letters keep it in a header."""
    header = headers.get(ROUTING_KEY_HEADER) if headers else None
    if isinstance(header, bytes):
        header = header.decode("utf-8", "replace")
    if isinstance(header, str) and header:
        return header
    return routing_key or ""


def binding_keys(queue: str, cqrs_id: str) -> tuple[str, str]:
    """What a replica queue is bound with for one ``cqrs_id``: broadcasts and direct syncs."""
    return cqrs_id, direct_routing_key(queue, cqrs_id)


def dead_letter_binding_key(dead_letter_queue: str, cqrs_id: str) -> str:
    """What a dead-letter queue is bound with for one ``cqrs_id`` (django-cqrs's binding)."""
    return direct_routing_key(dead_letter_queue, cqrs_id)


def dead_letter_queue_name(queue: str) -> str:
    """The default dead-letter queue of a replica queue (``replica.dead_letter_queue`` unset)."""
    return f"dead_letter_{queue}"


def delay_queue_name(queue: str, delay_ms: int) -> str:
    """RabbitMQ: ``<queue>.retry.<delay_ms>``, where retries wait ``delay_ms`` (a message TTL)."""
    return f"{queue}{_DELAY_QUEUE_INFIX}{delay_ms}"


def delay_of_queue(queue: str, name: str) -> int | None:
    """The delay in ms of a :func:`delay_queue_name` of ``queue``; None for any other name."""
    prefix = queue + _DELAY_QUEUE_INFIX
    if name.startswith(prefix) and name[len(prefix) :].isdigit():
        return int(name[len(prefix) :])
    return None


#: Routing keys of domain events: ``dj_cqrs.event.<name>`` (a django-cqrs replica binds only its
#: ``CQRS_ID`` s and ``cqrs.<queue>.<CQRS_ID>``, so it never receives them).
EVENT_ROUTING_PREFIX = "dj_cqrs.event."


def event_routing_key(name: str) -> str:
    """The routing key of a domain event named ``name`` (``order.paid``)."""
    return EVENT_ROUTING_PREFIX + name


def event_binding_key(pattern: str) -> str:
    """What a queue is bound with for a handler pattern (AMQP topic syntax over event names)."""
    return EVENT_ROUTING_PREFIX + pattern


def event_direct_binding_key(queue: str) -> str:
    """Binds ``queue`` to the domain events addressed to it alone (a replayed dead letter)."""
    return direct_routing_key(queue, EVENT_ROUTING_PREFIX + "#")


def event_name_of(routing_key: str) -> str | None:
    """The event name a (broadcast or direct) routing key carries; None for a model event."""
    if routing_key.startswith(EVENT_ROUTING_PREFIX):
        return routing_key[len(EVENT_ROUTING_PREFIX) :]
    if routing_key.startswith(_DIRECT_PREFIX):
        index = routing_key.find("." + EVENT_ROUTING_PREFIX, len(_DIRECT_PREFIX))
        if index >= 0:
            return routing_key[index + 1 + len(EVENT_ROUTING_PREFIX) :]
    return None


#: The key a partitioned replica's consistent-hash exchange hashes on: ``<cqrs_id>:<pk>``, set by
#: dj_cqrs masters on every message (django-cqrs masters send no headers: see docs/scaling.md).
PARTITION_HEADER = "x-cqrs-partition-key"
_PARTITION_INFIX = ".p"


def partition_key(cqrs_id: str, pk: Any) -> str:
    """The value of :data:`PARTITION_HEADER` for an event of ``cqrs_id`` about row ``pk``."""
    return f"{cqrs_id}:{pk}"


#: The partition key's prefix of every domain event (:func:`event_partition_key`).
EVENT_PARTITION_PREFIX = "dj_cqrs.event"


def event_partition_key(key: Any) -> str:
    """The value of :data:`PARTITION_HEADER` for a domain event about ``key``, whatever its name
    (``dj_cqrs.event:<key>``): a key's events are ordered across names (their ``seq`` is per key),
    so ``order.created`` and ``order.paid`` of one key must share a partition."""
    return f"{EVENT_PARTITION_PREFIX}:{key}"


def partition_exchange_name(queue: str) -> str:
    """``<queue>.partitions``: the consistent-hash exchange of a partitioned replica service."""
    return f"{queue}.partitions"


def partition_queue_name(queue: str, index: int) -> str:
    """``<queue>.p<index>``: one partition queue of a partitioned replica service."""
    return f"{queue}{_PARTITION_INFIX}{index}"


def partition_queue_names(queue: str, partitions: int) -> list[str]:
    """The ``partitions`` queues of a partitioned replica service, in order."""
    return [partition_queue_name(queue, i) for i in range(partitions)]


def retry_queue_name(queue: str) -> str:
    """kombu: ``<queue>.retry``, where retries wait for their ``x-cqrs-not-before`` time."""
    return f"{queue}.retry"


__all__ = [
    "DEAD_UNTIL_HEADER",
    "EVENT_PARTITION_PREFIX",
    "EVENT_ROUTING_PREFIX",
    "DELAY_HEADER",
    "DROPPED_HEADERS_HEADER",
    "ERROR_HEADER",
    "EXCEPTION_HEADER",
    "FAILURE_HEADER",
    "FAILURE_HEADERS",
    "FIRST_FAILURE_HEADER",
    "HEADER_PREFIX",
    "LAST_FAILURE_HEADER",
    "NOT_BEFORE_HEADER",
    "PARTITION_HEADER",
    "QUEUE_HEADER",
    "REASON_HEADER",
    "RETRIES_HEADER",
    "ROUTING_KEY_HEADER",
    "WORKER_HEADER",
    "Addressed",
    "binding_keys",
    "dead_letter_binding_key",
    "dead_letter_queue_name",
    "delay_of_queue",
    "delay_queue_name",
    "direct_queue",
    "direct_routing_key",
    "event_binding_key",
    "event_direct_binding_key",
    "event_name_of",
    "event_partition_key",
    "event_routing_key",
    "original_routing_key",
    "partition_exchange_name",
    "partition_key",
    "partition_queue_name",
    "partition_queue_names",
    "retry_queue_name",
    "routing_key_for",
]
