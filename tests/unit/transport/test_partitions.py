"""``CQRS['replica']['partitions']`` and ``['queue_type']``: settings, the partition header every
RabbitMQ publish carries, the declared topology and the broker's refusals (docs/scaling.md).

The declarations are recorded by a channel stand-in (the pika ``BlockingChannel`` methods the
topology calls); the real broker runs them in integration_tests/test_partitions.py.
"""

from __future__ import annotations

from typing import Any

import pika
import pika.exceptions
import pytest
from django.test import override_settings

from dj_cqrs.conf import cqrs_settings, validate
from dj_cqrs.core.event import EventPayload
from dj_cqrs.core.names import PARTITION_HEADER, partition_key, partition_queue_names
from dj_cqrs.core.payload import TransportPayload
from dj_cqrs.exceptions import ConfigurationError
from dj_cqrs.transport.rabbit_connection import message_properties
from dj_cqrs.transport.rabbit_mq import RabbitMQTransport, _headers, _Marshaller
from dj_cqrs.transport.rabbit_topology import (
    QUORUM_DELIVERY_LIMIT,
    consumed_queues,
    declare_replica_topology,
    translate_refusal,
)
from tests.unit.conftest import cqrs_with


class Channel:
    """Records the declarations and bindings (in order)."""

    def __init__(self, refuse: BaseException | None = None) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.refuse = refuse

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> None:
            self.calls.append((name, args, kwargs))
            if self.refuse is not None and name == "queue_declare":
                raise self.refuse

        return call

    def named(self, name: str) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        return [(args, kwargs) for call, args, kwargs in self.calls if call == name]


def replica(**options: Any) -> Any:
    return override_settings(CQRS=cqrs_with(transport="rabbitmq", queue="orders", replica=options))


def declared(**options: Any) -> Channel:
    channel = Channel()
    with replica(**options):
        declare_replica_topology(channel, "cqrs", "orders", "dead_letter_orders", ["order", "line"])
    return channel


# -- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"partitions": 0}, "dj_cqrs.E008"),
        ({"partitions": 1025}, "dj_cqrs.E008"),
        ({"partitions": "8"}, "dj_cqrs.E008"),
        ({"partitions": True}, "dj_cqrs.E008"),
        ({"queue_type": "stream"}, "dj_cqrs.E008"),
        ({"queue_type": None}, "dj_cqrs.E008"),
    ],
)
def test_bad_values_are_e008(options: dict[str, Any], problem: str) -> None:
    config = cqrs_with(transport="rabbitmq", queue="orders", replica=options)
    problems = validate(config, has_masters=False, has_replicas=True)
    assert problem in {p.id for p in problems}, problems
    with override_settings(CQRS=config), pytest.raises(ConfigurationError, match=problem):
        getattr(cqrs_settings.replica, next(iter(options)))


@pytest.mark.parametrize(
    "options",
    [{"partitions": None}, {"partitions": 1}, {"partitions": 1024}, {"queue_type": "quorum"}],
)
def test_good_values_pass(options: dict[str, Any]) -> None:
    config = cqrs_with(transport="rabbitmq", queue="orders", replica=options)
    assert validate(config, has_masters=False, has_replicas=True) == []
    with override_settings(CQRS=config):
        key = next(iter(options))
        assert getattr(cqrs_settings.replica, key) == options[key]


def test_defaults_are_todays_topology() -> None:
    with replica():
        assert cqrs_settings.replica.partitions is None
        assert cqrs_settings.replica.queue_type == "classic"
        assert consumed_queues("orders") == ["orders"]


@pytest.mark.parametrize("transport", ["kombu", "memory", "dj_cqrs.transport.KombuTransport"])
def test_other_transports_warn_w100(transport: str) -> None:
    config = cqrs_with(transport=transport, queue="orders", replica={"partitions": 4})
    problems = [
        p for p in validate(config, has_masters=False, has_replicas=True) if p.id == "dj_cqrs.W100"
    ]
    assert len(problems) == 1 and problems[0].warning
    assert "'partitions'" in problems[0].msg


def test_rabbitmq_does_not_warn() -> None:
    for transport in ("rabbitmq", "dj_cqrs.transport.RabbitMQTransport"):
        config = cqrs_with(
            transport=transport, queue="o", replica={"partitions": 4, "queue_type": "quorum"}
        )
        assert "dj_cqrs.W100" not in {
            p.id for p in validate(config, has_masters=False, has_replicas=True)
        }


# -- the header --------------------------------------------------------------------------------


def test_every_event_carries_its_partition_key() -> None:
    payload = TransportPayload("SAVE", "order", {"id": 42, "cqrs_revision": 3}, 42)
    assert _headers(payload) == {PARTITION_HEADER: "order:42"}
    payload.trace = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}  # type: ignore[attr-defined]
    assert _headers(payload) == {**payload.trace, PARTITION_HEADER: "order:42"}  # type: ignore[attr-defined]
    assert partition_key("order", "8c1f") == "order:8c1f"


def test_a_domain_event_is_keyed_by_its_key_alone() -> None:
    # A key's events are ordered across names (seq is per key): keyed by name and key before,
    # order.created and order.paid of one key went to different partitions and an ordered=True
    # handler skipped some as stale (integration_tests/test_events.py, partitioned).
    import datetime

    def event(name: str, key: str) -> EventPayload:
        return EventPayload(
            id="e1",
            name=name,
            key=key,
            seq=1,
            version=1,
            data={},
            meta=None,
            occurred_at=datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc),
        )

    assert _headers(event("order.paid", "7"))[PARTITION_HEADER] == "dj_cqrs.event:7"
    assert (
        _headers(event("order.created", "7"))[PARTITION_HEADER]
        == _headers(event("invoice.sent.v2", "7"))[PARTITION_HEADER]
    )
    assert _headers(event("order.paid", "8"))[PARTITION_HEADER] == "dj_cqrs.event:8"


@pytest.mark.parametrize("key", ["order:1", "order:" + "9" * 300, "ünï:cödé", "a:"])
def test_the_header_is_encoded_as_pika_encodes_it(key: str) -> None:
    assert _Marshaller(1, 131072).key_properties(key) == b"".join(
        message_properties({PARTITION_HEADER: key}).encode()
    )


def test_the_published_frames_carry_the_header() -> None:
    """What ``produce`` writes to the socket decodes (with pika) to the header."""
    transport = RabbitMQTransport()
    messages = transport._messages(
        [TransportPayload("SAVE", "order", {"id": 5, "cqrs_revision": 0}, 5)]
    )
    marshaller = _Marshaller(1, 131072)
    _exchange, _rk, body, headers, _expiration = messages[0]
    frames = marshaller.frames(
        "cqrs", "order", body, marshaller.key_properties(headers[PARTITION_HEADER])
    )
    assert frames is not None
    # method frame, then the content header frame: decode its properties with pika
    method_size = int.from_bytes(frames[3:7], "big")
    header = frames[7 + method_size + 1 :]
    size = int.from_bytes(header[3:7], "big")
    properties = pika.spec.BasicProperties()
    properties.decode(header[7 + 12 : 7 + size])
    assert properties.headers == {PARTITION_HEADER: "order:5"}
    assert (properties.content_type, properties.delivery_mode) == ("text/plain", 2)


# -- topology ----------------------------------------------------------------------------------


def test_classic_without_partitions_declares_django_cqrs_topology() -> None:
    channel = declared()
    assert channel.named("queue_declare") == [
        (("orders",), {"durable": True}),
        (("dead_letter_orders",), {"durable": True}),
    ]
    assert not channel.named("exchange_bind")
    bound = {(a[0], kw["routing_key"]) for a, kw in channel.named("queue_bind")}
    assert bound == {
        ("orders", "order"),
        ("orders", "cqrs.orders.order"),
        ("orders", "line"),
        ("orders", "cqrs.orders.line"),
        ("dead_letter_orders", "cqrs.dead_letter_orders.order"),
        ("dead_letter_orders", "cqrs.dead_letter_orders.line"),
    }


def test_partitions_declare_a_hash_exchange_and_single_active_queues() -> None:
    channel = declared(partitions=3)
    exchanges = {kw["exchange"]: kw for _a, kw in channel.named("exchange_declare")}
    assert exchanges["orders.partitions"]["exchange_type"] == "x-consistent-hash"
    assert exchanges["orders.partitions"]["arguments"] == {
        "hash-header": PARTITION_HEADER,
        "alternate-exchange": "orders.partitions.unkeyed",
    }
    assert exchanges["orders.partitions.unkeyed"]["exchange_type"] == "fanout"
    queues = {a[0]: kw for a, kw in channel.named("queue_declare")}
    assert set(queues) == {"orders.p0", "orders.p1", "orders.p2", "dead_letter_orders"}
    for name in partition_queue_names("orders", 3):
        assert queues[name] == {"durable": True, "arguments": {"x-single-active-consumer": True}}
    # No queue named after the service: the master's keys reach the hash exchange only.
    assert "orders" not in queues
    assert {kw["routing_key"] for _a, kw in channel.named("exchange_bind")} == {
        "order",
        "cqrs.orders.order",
        "line",
        "cqrs.orders.line",
    }
    assert all(
        kw["destination"] == "orders.partitions" and kw["source"] == "cqrs"
        for _a, kw in channel.named("exchange_bind")
    )
    to_hash = [(a[0], kw) for a, kw in channel.named("queue_bind") if a[1] == "orders.partitions"]
    assert to_hash == [(f"orders.p{i}", {"routing_key": "1"}) for i in range(3)]
    assert ("orders.p0", "orders.partitions.unkeyed") in {
        a[:2] for a, _kw in channel.named("queue_bind")
    }
    with replica(partitions=3):
        assert consumed_queues("orders") == ["orders.p0", "orders.p1", "orders.p2"]


def test_quorum_queues_get_the_type_a_delivery_limit_and_a_dead_letter_target() -> None:
    channel = declared(queue_type="quorum")
    queues = {a[0]: kw for a, kw in channel.named("queue_declare")}
    assert queues["dead_letter_orders"]["arguments"] == {"x-queue-type": "quorum"}
    assert queues["orders"]["arguments"] == {
        "x-queue-type": "quorum",
        "x-delivery-limit": QUORUM_DELIVERY_LIMIT,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "dead_letter_orders",
    }
    partitioned = {
        a[0]: kw for a, kw in declared(queue_type="quorum", partitions=2).named("queue_declare")
    }
    assert partitioned["orders.p1"]["arguments"]["x-single-active-consumer"] is True
    assert partitioned["orders.p1"]["arguments"]["x-queue-type"] == "quorum"


def test_retry_queues_follow_the_queue_type() -> None:
    from dj_cqrs.transport.rabbit_consumer import retry_queue_arguments

    with replica(queue_type="quorum"):
        arguments = retry_queue_arguments("orders.p3", 2000)
    assert arguments["x-queue-type"] == "quorum"
    assert arguments["x-dead-letter-routing-key"] == "orders.p3"  # back into its own partition
    with replica():
        assert "x-queue-type" not in retry_queue_arguments("orders", 2000)


# -- refusals ----------------------------------------------------------------------------------


def test_unknown_exchange_type_is_e100_with_the_plugin_command() -> None:
    refusal = pika.exceptions.ConnectionClosedByBroker(
        503, "COMMAND_INVALID - unknown exchange type 'x-consistent-hash'"
    )
    channel = Channel(refuse=refusal)
    with replica(partitions=2), pytest.raises(ConfigurationError) as info:
        declare_replica_topology(channel, "cqrs", "orders", "dead_letter_orders", ["order"])
    assert str(info.value).startswith("dj_cqrs.E100")
    assert "rabbitmq-plugins enable rabbitmq_consistent_hash_exchange" in str(info.value)
    assert info.value.__cause__ is refusal


def test_another_queue_type_is_e101_with_the_migration_hint() -> None:
    text = "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'orders' in vhost '/': received 'quorum' but current is 'classic'"
    refusal = pika.exceptions.ChannelClosedByBroker(406, text)
    with replica(queue_type="quorum"), pytest.raises(ConfigurationError) as info:
        declare_replica_topology(
            Channel(refuse=refusal), "cqrs", "orders", "dead_letter_orders", ["order"]
        )
    assert str(info.value).startswith("dj_cqrs.E101")
    assert "x-queue-type" in str(info.value) and "Migrating an existing queue" in str(info.value)


def test_other_refusals_are_not_translated() -> None:
    refusal = pika.exceptions.ChannelClosedByBroker(403, "ACCESS_REFUSED - no configure permission")
    assert translate_refusal(refusal) is None
    with replica(partitions=2), pytest.raises(pika.exceptions.ChannelClosedByBroker):
        declare_replica_topology(
            Channel(refuse=refusal), "cqrs", "orders", "dead_letter_orders", ["order"]
        )
