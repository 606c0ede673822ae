"""A replica service's queues on RabbitMQ: one queue or N partitions, classic or quorum.

``replica.partitions = None`` (default) is django-cqrs's topology (:func:`declare_topology` of
:mod:`dj_cqrs.transport.rabbit_connection`): one queue ``<queue>`` bound to the master's topic
exchange with ``<cqrs_id>`` and ``cqrs.<queue>.<cqrs_id>``.

``replica.partitions = N`` (docs/scaling.md)::

    topic exchange CQRS['exchange']
      -- <cqrs_id>, cqrs.<queue>.<cqrs_id>, domain event keys -->
    x-consistent-hash exchange <queue>.partitions   (hash-header x-cqrs-partition-key)
      -- weight "1" each --> <queue>.p0 ... <queue>.p<N-1>   (x-single-active-consumer)

dj_cqrs masters put ``<cqrs_id>:<pk>`` into the header ``x-cqrs-partition-key`` of every message,
so all messages of one row land in one partition, in order. A message without the header (a
django-cqrs master) is hashed as a constant by RabbitMQ 3.x: all of them share one partition (in
order, not spread); should a broker route it nowhere, the alternate exchange
``<queue>.partitions.unkeyed`` (fanout) puts it into ``<queue>.p0``.

``replica.queue_type`` sets ``x-queue-type`` of the replica (or partition), retry and dead-letter
queues. Quorum replica queues also get a delivery limit (:data:`QUORUM_DELIVERY_LIMIT`): a message
redelivered that often (it crashed or hung every worker that took it, so it was never settled) is
dead-lettered by the broker into the dead-letter queue instead of looping for ever.

A declaration RabbitMQ refuses because an existing queue differs (``406 PRECONDITION_FAILED``,
most often its type) raises ``ConfigurationError`` ``dj_cqrs.E101``; an unknown exchange type
(``503 COMMAND_INVALID``: the consistent-hash plugin is off) raises ``dj_cqrs.E100``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pika.exceptions

from dj_cqrs.conf import cqrs_settings
from dj_cqrs.core.names import (
    PARTITION_HEADER,
    binding_keys,
    dead_letter_binding_key,
    partition_exchange_name,
    partition_queue_names,
)
from dj_cqrs.exceptions import ConfigurationError, exception_chain
from dj_cqrs.transport.rabbit_connection import declare_topology

if TYPE_CHECKING:
    from pika.adapters.blocking_connection import BlockingChannel

#: ``x-delivery-limit`` of quorum replica and partition queues.
QUORUM_DELIVERY_LIMIT = 50
CONSISTENT_HASH_PLUGIN = "rabbitmq_consistent_hash_exchange"
PLUGIN_HINT = (
    f"run `rabbitmq-plugins enable {CONSISTENT_HASH_PLUGIN}` on every node of the RabbitMQ cluster"
    " (it ships with RabbitMQ; no restart needed), or set CQRS['replica']['partitions'] = None"
)
MIGRATION_HINT = (
    "RabbitMQ cannot change an existing queue's type or arguments: see 'Migrating an existing queue'"
    " in docs/scaling.md (drain the queue with the old settings, or move it with a temporary queue"
    " or a shovel, delete it, then start cqrs_consume with the new settings), or set"
    " CQRS['replica']['queue_type'] back"
)


def queue_type_arguments(queue_type: str | None = None) -> dict[str, Any]:
    """``x-queue-type`` for ``replica.queue_type`` (nothing for classic: a classic queue declared
    by django-cqrs or an older dj_cqrs has no such argument, and must stay equivalent)."""
    kind = queue_type or cqrs_settings.replica.queue_type
    return {"x-queue-type": "quorum"} if kind == "quorum" else {}


def replica_queue_arguments(dead_letter_queue: str, single_active: bool) -> dict[str, Any]:
    """Arguments of a replica or partition queue."""
    arguments = queue_type_arguments()
    if single_active:
        arguments["x-single-active-consumer"] = True
    if arguments.get("x-queue-type") == "quorum":
        arguments["x-delivery-limit"] = QUORUM_DELIVERY_LIMIT
        arguments["x-dead-letter-exchange"] = ""
        arguments["x-dead-letter-routing-key"] = dead_letter_queue
    return arguments


def consumed_queues(queue: str) -> list[str]:
    """The queues a consumer of ``queue`` reads: the partitions, or ``queue`` itself."""
    partitions: int | None = cqrs_settings.replica.partitions
    return partition_queue_names(queue, partitions) if partitions else [queue]


def declare_replica_topology(
    channel: BlockingChannel,
    exchange: str,
    queue: str,
    dead_letter_queue: str,
    cqrs_ids: list[str],
    extra_keys: list[str] | None = None,
) -> None:
    """Declare the exchange, the replica queue(s) and the dead-letter queue with their bindings
    (see the module docstring); refusals become ``ConfigurationError`` E100/E101."""
    with refusals_translated():
        _declare(channel, exchange, queue, dead_letter_queue, cqrs_ids, extra_keys or [])


@contextlib.contextmanager
def refusals_translated() -> Iterator[None]:
    """Declarations inside the block that the broker refuses because of the settings raise
    ``ConfigurationError`` E100/E101 (see :func:`translate_refusal`), which stops the consumer
    instead of reconnecting: e.g. a retry queue ``<queue>.retry.<ms>`` left classic by a
    ``queue_type`` migration, refused when the first retry declares it as quorum."""
    try:
        yield
    except (pika.exceptions.ChannelClosedByBroker, pika.exceptions.ConnectionClosedByBroker) as exc:
        error = translate_refusal(exc)
        if error is None:
            raise
        raise error from exc


def _declare(
    channel: BlockingChannel,
    exchange: str,
    queue: str,
    dead_letter_queue: str,
    cqrs_ids: list[str],
    extra_keys: list[str],
) -> None:
    partitions: int | None = cqrs_settings.replica.partitions
    quorum = cqrs_settings.replica.queue_type == "quorum"
    if not partitions and not quorum:
        declare_topology(channel, exchange, queue, dead_letter_queue, cqrs_ids, extra_keys)
        return
    channel.exchange_declare(exchange=exchange, exchange_type="topic", durable=True)
    channel.queue_declare(dead_letter_queue, durable=True, arguments=queue_type_arguments() or None)
    for cqrs_id in cqrs_ids:
        channel.queue_bind(
            dead_letter_queue,
            exchange,
            routing_key=dead_letter_binding_key(dead_letter_queue, cqrs_id),
        )
    keys = [key for cqrs_id in cqrs_ids for key in binding_keys(queue, cqrs_id)] + list(extra_keys)
    if not partitions:
        channel.queue_declare(
            queue, durable=True, arguments=replica_queue_arguments(dead_letter_queue, False)
        )
        for key in keys:
            channel.queue_bind(queue, exchange, routing_key=key)
        return
    hashed = partition_exchange_name(queue)
    unkeyed = f"{hashed}.unkeyed"
    names = partition_queue_names(queue, partitions)
    channel.exchange_declare(exchange=unkeyed, exchange_type="fanout", durable=True)
    channel.exchange_declare(
        exchange=hashed,
        exchange_type="x-consistent-hash",
        durable=True,
        arguments={"hash-header": PARTITION_HEADER, "alternate-exchange": unkeyed},
    )
    arguments = replica_queue_arguments(dead_letter_queue, True)
    for name in names:
        channel.queue_declare(name, durable=True, arguments=arguments)
        channel.queue_bind(name, hashed, routing_key="1")  # the weight of the partition: equal
    channel.queue_bind(names[0], unkeyed)
    for key in keys:
        channel.exchange_bind(destination=hashed, source=exchange, routing_key=key)


def translate_refusal(exc: BaseException) -> ConfigurationError | None:
    """The ``ConfigurationError`` for a declaration the broker refused, or None."""
    for error in exception_chain(exc):
        code = getattr(error, "reply_code", None)
        text = str(getattr(error, "reply_text", "") or "")
        if code == 503 and "unknown exchange type" in text:
            return ConfigurationError(
                f"dj_cqrs.E100: CQRS['replica']['partitions'] needs RabbitMQ's consistent-hash"
                f" exchange, which this broker does not know ({text}): {PLUGIN_HINT}."
            )
        if code == 406 and "inequivalent arg" in text:
            return ConfigurationError(
                f"dj_cqrs.E101: a queue or exchange of this replica service exists with other arguments"
                f" than CQRS['replica'] asks for (queue_type={cqrs_settings.replica.queue_type!r},"
                f" partitions={cqrs_settings.replica.partitions!r}): {text}. {MIGRATION_HINT}."
            )
    return None


__all__ = [
    "CONSISTENT_HASH_PLUGIN",
    "QUORUM_DELIVERY_LIMIT",
    "consumed_queues",
    "declare_replica_topology",
    "refusals_translated",
    "queue_type_arguments",
    "replica_queue_arguments",
    "translate_refusal",
]
