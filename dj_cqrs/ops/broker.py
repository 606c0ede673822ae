"""What the broker tells about this replica service's queues, without consuming anything.

* RabbitMQ: a passive ``queue.declare`` of the replica queue (ready messages, consumers) and of its
  dead-letter queue (letters); the management HTTP API, when reachable, adds the unacknowledged
  messages and the acknowledgement rate (from which the lag is estimated);
* kombu: a passive ``queue.declare`` through kombu (AMQP brokers give the consumers too), the dead
  letters through the transport's dead-letter store;
* the in-memory transport: its lists;
* any other transport: the dead letters through its store, if it has one.

A broker that cannot be reached raises :class:`~dj_cqrs.exceptions.ConnectionFailed`.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from dj_cqrs.conf import cqrs_settings
from dj_cqrs.exceptions import ConnectionFailed, CqrsError
from dj_cqrs.replica import dead_letters
from dj_cqrs.transport.base import BaseTransport


@dataclasses.dataclass
class QueueStats:
    """One queue as the broker sees it; None: the transport cannot tell."""

    name: str
    exists: bool = True
    ready: int | None = None
    unacked: int | None = None
    consumers: int | None = None
    #: Acknowledgements per second (RabbitMQ's management API).
    ack_rate: float | None = None
    #: Estimated seconds to work off the ready and unacknowledged messages at ``ack_rate`` (0 when
    #: there are none).
    lag: float | None = None
    #: Ready or unacknowledged messages and no acknowledgement: the queue is not being worked off.
    stalled: bool = False


@dataclasses.dataclass
class BrokerStats:
    queue: QueueStats
    dead_letter_queue: str
    dead_letters: int | None
    notes: list[str] = dataclasses.field(default_factory=list)


def _module(name: str) -> Any:
    """A transport module, only when it is loaded already (its class is the configured one)."""
    return sys.modules.get(name)


def _is(transport: BaseTransport, module: str, cls: str) -> bool:
    loaded = _module(module)
    return loaded is not None and isinstance(transport, getattr(loaded, cls))


def queue_stats(transport: BaseTransport) -> BrokerStats:
    """The replica queue and dead letters of this service (``CQRS['queue']``)."""
    queue = cqrs_settings.queue
    dlq = cqrs_settings.dead_letter_queue
    if _is(transport, "dj_cqrs.transport.memory", "MemoryTransport"):
        memory: Any = transport
        stats = QueueStats(
            queue, ready=len(memory.messages), unacked=0, lag=0.0 if not memory.messages else None
        )
        return BrokerStats(stats, dlq, len(memory.dead_letters))
    if _is(transport, "dj_cqrs.transport.rabbit_mq", "RabbitMQTransport"):
        return _rabbitmq(queue, dlq)
    if _is(transport, "dj_cqrs.transport.kombu", "KombuTransport"):
        return _kombu(transport, queue, dlq)
    result = BrokerStats(
        QueueStats(queue), dlq, None, [f"{type(transport).__name__} reports no queue figures"]
    )
    with contextlib.suppress(CqrsError):
        result.dead_letters = dead_letters.store_for(transport).count()
    return result


# -- RabbitMQ ----------------------------------------------------------------------------------


def _rabbitmq(queue: str, dlq: str) -> BrokerStats:
    import pika
    import pika.exceptions

    from dj_cqrs.transport.rabbit_connection import CONNECTION_ERRORS, display_url
    from dj_cqrs.transport.rabbit_nodes import node_parameters
    from dj_cqrs.transport.rabbit_topology import consumed_queues

    timeout = float(cqrs_settings.status.timeout)
    nodes = node_parameters("status")  # a cluster's nodes: the first that answers
    for params in nodes:
        params.socket_timeout = timeout
        params.stack_timeout = timeout
        params.blocked_connection_timeout = timeout
        params.connection_attempts = 1
        params.retry_delay = 0
    try:
        connection = pika.BlockingConnection(nodes[0] if len(nodes) == 1 else nodes)
    except CONNECTION_ERRORS as exc:
        raise ConnectionFailed(f"cannot connect to RabbitMQ at {display_url()}: {exc!r}") from exc
    # The management API of the node that answered.
    params = getattr(getattr(connection, "_impl", None), "params", None) or nodes[0]
    try:
        stats = QueueStats(queue)
        # A partitioned service (replica.partitions): the sum over its partition queues; every
        # worker subscribes to each of them, so the consumers are those of one partition.
        partitions = consumed_queues(queue)
        for name in partitions:
            declared = _passive(connection, name, pika.exceptions.ChannelClosedByBroker)
            if declared is None:
                stats.exists = False
                break
            stats.ready = (stats.ready or 0) + declared[0]
            stats.consumers = max(stats.consumers or 0, declared[1])
        letters = _passive(connection, dlq, pika.exceptions.ChannelClosedByBroker)
    except CONNECTION_ERRORS as exc:
        raise ConnectionFailed(f"RabbitMQ at {display_url()} failed: {exc!r}") from exc
    finally:
        with contextlib.suppress(Exception):
            connection.close()
    result = BrokerStats(stats, dlq, letters[0] if letters is not None else 0)
    if stats.exists and len(partitions) > 1:
        result.notes.append(
            f"{len(partitions)} partition queues {partitions[0]} ... {partitions[-1]}: ready,"
            " unacknowledged and acknowledgement rate are their sums"
        )
    if stats.exists:
        fill_from_management(params, partitions, stats, result.notes)
    return result


def _passive(connection: Any, queue: str, closed: type[BaseException]) -> tuple[int, int] | None:
    """``(messages ready, consumers)`` of a queue; None when it does not exist (404)."""
    channel = connection.channel()
    try:
        method = channel.queue_declare(queue, passive=True).method
    except closed as exc:
        if getattr(exc, "reply_code", None) == 404:
            return None
        raise
    with contextlib.suppress(Exception):
        channel.close()
    return int(method.message_count), int(method.consumer_count)


def management_url(params: Any) -> str | None:
    """The management API's base URL: ``CQRS['status']['management_url']``, or derived from the
    broker's host (port 15672, the broker's credentials); None when turned off."""
    setting = cqrs_settings.status.management_url
    if setting is False:
        return None
    if isinstance(setting, str):
        return setting.rstrip("/") + "/"
    credentials = params.credentials
    user = urllib.parse.quote(getattr(credentials, "username", "guest"), safe="")
    password = urllib.parse.quote(getattr(credentials, "password", "guest"), safe="")
    scheme = "https" if params.ssl_options is not None else "http"
    return f"{scheme}://{user}:{password}@{params.host}:15672/"


def fill_from_management(
    params: Any, queue: str | list[str], stats: QueueStats, notes: list[str]
) -> None:
    """Fill the unacknowledged messages, the acknowledgement rate and the lag from the API; for
    several queues (the partitions of a service) their sums."""
    names = [queue] if isinstance(queue, str) else list(queue)
    base = management_url(params)
    if base is None:
        notes.append("management API turned off: unacknowledged messages and lag unknown")
        return
    vhost = urllib.parse.quote(params.virtual_host, safe="")
    unacked: int | None = 0
    ack_rate = 0.0
    for name in names:
        try:
            data = _get_json(f"{base}api/queues/{vhost}/{urllib.parse.quote(name, safe='')}")
        except (OSError, ValueError) as exc:
            notes.append(
                f"management API not reachable ({type(exc).__name__}): unacknowledged messages and lag unknown"
            )
            return
        count = _int(data.get("messages_unacknowledged"))
        unacked = None if unacked is None or count is None else unacked + count
        rate = (data.get("message_stats") or {}).get("ack_details", {}).get("rate")
        ack_rate += float(rate) if isinstance(rate, (int, float)) else 0.0
    stats.unacked = unacked
    stats.ack_rate = ack_rate
    estimate_lag(stats)


def estimate_lag(stats: QueueStats) -> None:
    """``lag``: seconds to work off the queue's backlog at the acknowledgement rate. The backlog is
    the ready messages and the unacknowledged ones: the consumers' prefetch (up to ``prefetch`` per
    worker) holds delivered messages that are not applied yet, so a slow or hung consumer shows
    them as unacknowledged while none is ready."""
    backlog = (stats.ready or 0) + (stats.unacked or 0)
    if not backlog:
        stats.lag = 0.0
    elif stats.ack_rate:
        stats.lag = round(backlog / stats.ack_rate, 3)
    else:
        stats.lag = None
        stats.stalled = True


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _get_json(url: str) -> dict[str, Any]:
    """GET ``url`` (basic auth from its user info) and decode the JSON object it returns."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    request = urllib.request.Request(urllib.parse.urlunsplit(parts._replace(netloc=netloc)))
    if parts.username is not None:
        token = (
            f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        )
        request.add_header("Authorization", "Basic " + base64.b64encode(token.encode()).decode())
    with urllib.request.urlopen(request, timeout=float(cqrs_settings.status.timeout)) as response:  # noqa: S310 - an http(s) URL
        data = json.loads(response.read())
    if not isinstance(data, dict):
        raise ValueError("the management API did not answer a JSON object")
    return data


# -- kombu -------------------------------------------------------------------------------------


def _kombu(transport: BaseTransport, queue: str, dlq: str) -> BrokerStats:
    from dj_cqrs.transport.kombu_connection import connection_errors, new_connection

    conn: Any = new_connection()
    errors = connection_errors(conn)
    stats = QueueStats(queue)
    letters = 0
    try:
        conn.ensure_connection(max_retries=1, timeout=float(cqrs_settings.status.timeout))
        declared = _kombu_passive(conn, queue, errors)
        if declared is None and getattr(conn.transport, "driver_type", "") != "amqp":
            stats.ready = 0  # Redis and the other virtual brokers keep no empty queue
        elif declared is None:
            stats.exists = False
        else:
            stats.ready, stats.consumers = declared
        # (a missing dead-letter queue, or an empty one on Redis, which keeps no empty queues)
        letters = (_kombu_passive(conn, dlq, errors) or (0, None))[0]
    except errors as exc:
        raise ConnectionFailed(f"broker error while reading the queue {queue!r}: {exc!r}") from exc
    finally:
        with contextlib.suppress(Exception):
            conn.release()
    return BrokerStats(stats, dlq, letters)


def _kombu_passive(
    conn: Any, queue: str, errors: tuple[type[BaseException], ...]
) -> tuple[int, int | None] | None:
    """``(messages, consumers)`` of a queue (consumers: AMQP brokers only); None if missing."""
    channel = conn.channel()
    try:
        declared = channel.queue_declare(queue=queue, passive=True)
    except errors:
        if not conn.connected:
            raise
        return None
    finally:
        with contextlib.suppress(Exception):
            channel.close()
    consumers = getattr(declared, "consumer_count", None)
    return int(declared.message_count), consumers if isinstance(consumers, int) else None


__all__ = [
    "BrokerStats",
    "QueueStats",
    "estimate_lag",
    "fill_from_management",
    "management_url",
    "queue_stats",
]
