"""Looking at the broker from the side: copies of what masters publish, and dead letters."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import pika

from integration_tests.harness import RABBIT_HOST, RABBIT_PORT


@dataclass
class Seen:
    routing_key: str
    properties: dict[str, Any]
    raw: bytes

    @property
    def body(self) -> dict[str, Any]:
        return json.loads(self.raw)  # type: ignore[no-any-return]


def _connect() -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.ConnectionParameters(RABBIT_HOST, RABBIT_PORT))


def consumer_count(queue: str) -> int:
    """Consumers on ``queue`` (0 when it does not exist). A replica consumes only after it has
    declared its queue *and* bound it, so this is the "ready to receive" signal."""
    conn = _connect()
    try:
        return int(conn.channel().queue_declare(queue, passive=True).method.consumer_count)
    except pika.exceptions.ChannelClosedByBroker:
        return 0
    finally:
        if conn.is_open:
            conn.close()


def message_count(queue: str) -> int:
    conn = _connect()
    try:
        return int(conn.channel().queue_declare(queue, passive=True).method.message_count)
    except pika.exceptions.ChannelClosedByBroker:
        return 0
    finally:
        if conn.is_open:
            conn.close()


def take(queue: str, count: int, timeout: float = 30.0) -> list[Seen]:
    """Take (ack) exactly ``count`` messages from ``queue``; fail after ``timeout`` seconds."""
    conn = _connect()
    seen: list[Seen] = []
    try:
        channel = conn.channel()
        deadline = time.monotonic() + timeout
        while len(seen) < count:
            method, props, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                if time.monotonic() > deadline:
                    raise AssertionError(f"only {len(seen)} of {count} messages arrived in {queue} within {timeout}s")
                time.sleep(0.1)
                continue
            seen.append(
                Seen(
                    routing_key=method.routing_key,
                    properties={
                        "content_type": props.content_type,
                        "delivery_mode": props.delivery_mode,
                        "headers": dict(props.headers or {}),
                        "expiration": props.expiration,
                    },
                    raw=body,
                )
            )
    finally:
        if conn.is_open:
            conn.close()
    return seen


class Observer:
    """A queue bound to every routing key of an exchange: a copy of everything published on it.

    Named ``<prefix>.observer`` so the fleet's clean-up (queues starting with the replica queue
    name) removes it.
    """

    def __init__(self, exchange: str, prefix: str) -> None:
        self.exchange = exchange
        self.queue = f"{prefix}.observer"
        conn = _connect()
        try:
            channel = conn.channel()
            channel.exchange_declare(exchange, exchange_type="topic", durable=True)
            channel.queue_declare(self.queue, durable=False)
            channel.queue_bind(self.queue, exchange, routing_key="#")
        finally:
            conn.close()

    def take(self, count: int, timeout: float = 30.0) -> list[Seen]:
        return take(self.queue, count, timeout)
