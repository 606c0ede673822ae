"""The partitioned RabbitMQ consume loop (``replica.partitions``) against a recording stand-in for
pika's blocking connection: one channel per partition, balancing by releasing partitions above
the fair share, settling each message on its own partition's channel, retries back into their
partition. The broker itself is exercised in integration_tests/test_partitions.py."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pika.exceptions
import pytest
from django.test import override_settings

from dj_cqrs.core.messages import Action, Outcome
from dj_cqrs.core.names import PARTITION_HEADER
from dj_cqrs.core.payload import TransportPayload
from dj_cqrs.exceptions import ConfigurationError
from dj_cqrs.transport import rabbit_partitions
from dj_cqrs.transport.rabbit_partitions import PartitionedRabbitMQConsumer
from tests.unit.conftest import cqrs_with


class Channel:
    """Records what the consumer asks of one channel."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.is_open = True
        self.calls: list[tuple[str, Any]] = []
        self.consuming: str | None = None
        self.deliver: Any = None
        # pika's asynchronous channel under the blocking one: the same stand-in
        self._impl = self
        self._consumers: dict[str, Any] = {}
        self._cancelled: set[str] = set()

    @property
    def is_closed(self) -> bool:
        return not self.is_open

    def _record(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append((name, (args, kwargs)))

    def exchange_declare(self, *args: Any, **kwargs: Any) -> None:
        self._record("exchange_declare", *args, **kwargs)

    def exchange_bind(self, *args: Any, **kwargs: Any) -> None:
        self._record("exchange_bind", *args, **kwargs)

    def queue_bind(self, *args: Any, **kwargs: Any) -> None:
        self._record("queue_bind", *args, **kwargs)

    def queue_unbind(self, *args: Any, **kwargs: Any) -> None:
        self._record("queue_unbind", *args, **kwargs)

    def queue_declare(self, name: str, passive: bool = False, **kwargs: Any) -> Any:
        self._record("queue_declare", name, passive=passive, **kwargs)
        if passive and name not in self.connection.queues:
            self.is_open = False
            # What pika logs when the broker closes a channel (pika.channel._on_close_meta).
            logging.getLogger("pika.channel").warning(
                "Received remote Channel.Close (404): \"NOT_FOUND - no queue '%s'\"", name
            )
            raise pika.exceptions.ChannelClosedByBroker(404, f"NOT_FOUND - no queue '{name}'")
        self.connection.queues.add(name)
        return SimpleNamespace(
            method=SimpleNamespace(consumer_count=self.connection.workers, message_count=0)
        )

    def basic_qos(self, **kwargs: Any) -> None:
        self._record("basic_qos", **kwargs)

    def add_on_return_callback(self, callback: Any) -> None:
        pass

    def tx_select(self) -> None:
        self._record("tx_select")

    def basic_consume(self, queue: str, callback: Any, auto_ack: bool) -> None:
        self.consuming, self.deliver = queue, callback
        self._consumers[f"ctag-{queue}"] = callback

    def basic_ack(self, delivery_tag: int, multiple: bool = False) -> None:
        self._record("basic_ack", delivery_tag, multiple=multiple)

    def basic_publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: Any = None,
        mandatory: bool = False,
    ) -> None:
        self._record("basic_publish", exchange, routing_key, headers=properties.headers)

    def tx_commit(self) -> None:
        self._record("tx_commit")

    def close(self) -> None:
        # pika sends basic.cancel first for every consumer not marked cancelled
        self._record("close", uncancelled=sorted(set(self._consumers) - self._cancelled))
        self.is_open = False

    def named(self, name: str) -> list[Any]:
        return [args for call, args in self.calls if call == name]


class Connection:
    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.channels: list[Channel] = []
        self.is_open = True
        #: Queues that exist on the broker.
        self.queues: set[str] = set()

    def channel(self) -> Channel:
        channel = Channel(self)
        self.channels.append(channel)
        return channel

    def process_data_events(self, time_limit: float = 0) -> None:
        pass

    def close(self) -> None:
        self.is_open = False

    def subscribed(self, queue: str) -> Channel:
        """The open channel consuming ``queue``."""
        (channel,) = [c for c in self.channels if c.is_open and c.consuming == queue]
        return channel


def make_consumer(monkeypatch: pytest.MonkeyPatch, connection: Connection) -> Any:
    monkeypatch.setattr(rabbit_partitions, "open_blocking_connection", lambda *a, **k: connection)
    config = cqrs_with(
        transport="rabbitmq", queue="orders", replica={"partitions": 4, "CQRS_BATCH_SIZE": 10}
    )
    with override_settings(CQRS=config):  # the loop reads its settings when it is made
        loop = PartitionedRabbitMQConsumer(
            cqrs_ids=["order"], handler=lambda batch, wait, service: []
        )
        loop.open()
        loop.fake = connection
        return loop


@pytest.fixture
def consumer(monkeypatch: pytest.MonkeyPatch) -> Any:
    return make_consumer(monkeypatch, Connection(workers=2))


def deliver(consumer: Any, partition: int, tag: int, pk: int = 1) -> None:
    channel = consumer.fake.subscribed(f"orders.p{partition}")
    channel.deliver(
        channel,
        SimpleNamespace(routing_key="order", delivery_tag=tag),
        SimpleNamespace(headers={PARTITION_HEADER: f"order:{pk}"}),
        b"{}",
    )


def test_every_partition_is_consumed_on_its_own_transactional_channel(consumer: Any) -> None:
    channels = {name: consumer.fake.subscribed(name) for name in consumer.queues}
    assert list(channels) == ["orders.p0", "orders.p1", "orders.p2", "orders.p3"]
    assert len({id(c) for c in channels.values()}) == 4
    for channel in channels.values():
        assert channel.named("tx_select") and channel.named("basic_qos") == [
            ((), {"prefetch_count": 20})
        ]
    deliver(consumer, 2, 7)
    (message,) = consumer.take()
    assert message.handle == ("orders.p2", 7)


def test_a_worker_above_its_share_releases_the_partitions_that_delivered_least_recently(
    consumer: Any,
) -> None:
    for partition in range(4):  # two workers: a share of 2
        deliver(consumer, partition, 1, pk=partition)
    old = {name: consumer.fake.subscribed(name) for name in consumer.queues}
    consumer.balance()
    assert consumer.released == 2
    # Released (back in the line), closed without a basic.cancel first: the broker requeues what
    # was prefetched and hands the partition over in one step.
    assert old["orders.p0"].named("close") == [((), {"uncancelled": []})]
    assert old["orders.p1"].named("close") == [((), {"uncancelled": []})]
    assert old["orders.p2"].is_open and old["orders.p3"].is_open
    assert consumer.fake.subscribed("orders.p0") is not old["orders.p0"]  # subscribed again
    # Their prefetched messages are dropped here: closing the channel gives them back, in order.
    assert [m.handle[0] for m in consumer.take()] == ["orders.p2", "orders.p3"]


def test_no_release_at_or_below_the_share(consumer: Any) -> None:
    deliver(consumer, 0, 1)
    deliver(consumer, 1, 1)
    consumer.balance()
    consumer.fake.workers = 1
    for partition in range(4):
        deliver(consumer, partition, 2)
    consumer.balance()
    assert consumer.released == 0


def test_a_retry_goes_back_into_its_own_partition_on_its_channel(consumer: Any) -> None:
    deliver(consumer, 3, 5, pk=9)
    (message,) = consumer.take()
    payload = TransportPayload("SAVE", "order", {"id": 9, "cqrs_revision": 1}, 9)
    outcome = Outcome(Action.RETRY, reason="exception", detail="boom", delay=1.5, payload=payload)
    consumer.settle(message, outcome)
    consumer.ack([message], whole_batch=True)
    consumer.commit()
    channel = consumer.fake.subscribed("orders.p3")
    declared = [a for a in channel.named("queue_declare") if a[0][0] == "orders.p3.retry.1500"]
    assert declared and declared[0][1]["arguments"]["x-dead-letter-routing-key"] == "orders.p3"
    ((args, kwargs),) = channel.named("basic_publish")
    assert args[:2] == ("", "orders.p3.retry.1500")
    assert kwargs["headers"][PARTITION_HEADER] == "order:9"  # the key travels with the retry
    assert channel.named("basic_ack") == [((5,), {"multiple": True})]
    assert channel.named("tx_commit") == [((), {})]
    for other in ("orders.p0", "orders.p1", "orders.p2"):
        assert not consumer.fake.subscribed(other).named("tx_commit")


def test_a_retry_queue_of_another_type_stops_the_consumer_with_e101(consumer: Any) -> None:
    # A retry queue left classic by a queue_type migration: RabbitMQ refuses the declaration
    # (406). Before, the consumer reconnected and got the same message again, for ever (seen on
    # this machine: ~2 redeliveries a second, the messages of the batch applied again each time).
    deliver(consumer, 3, 5, pk=9)
    (message,) = consumer.take()
    channel = consumer.fake.subscribed("orders.p3")

    def refuse(name: str, passive: bool = False, **kwargs: Any) -> Any:
        raise pika.exceptions.ChannelClosedByBroker(
            406,
            f"PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue '{name}' in vhost"
            " '/': received the value 'quorum' of type 'longstr' but current is none",
        )

    channel.queue_declare = refuse  # type: ignore[method-assign]
    payload = TransportPayload("SAVE", "order", {"id": 9, "cqrs_revision": 1}, 9)
    outcome = Outcome(Action.RETRY, reason="exception", detail="boom", delay=1.0, payload=payload)
    with pytest.raises(ConfigurationError, match=r"^dj_cqrs\.E101: .*orders\.p3\.retry\.1000"):
        consumer.settle(message, outcome)


def test_a_batch_over_several_partitions_is_acknowledged_per_channel(consumer: Any) -> None:
    deliver(consumer, 0, 1)
    deliver(consumer, 1, 1)
    deliver(consumer, 0, 2)
    batch = consumer.take()
    payload = TransportPayload("SAVE", "order", {"id": 1, "cqrs_revision": 0}, 1)
    consumer.settle(batch[1], Outcome(Action.DEAD_LETTER, reason="max_retries", payload=payload))
    consumer.ack(batch, whole_batch=True)
    consumer.commit()
    p0, p1 = consumer.fake.subscribed("orders.p0"), consumer.fake.subscribed("orders.p1")
    assert p0.named("basic_ack") == [((2,), {"multiple": True})]
    assert p1.named("basic_ack") == [((1,), {"multiple": True})]
    assert [a[0][1] for a in p1.named("basic_publish")] == ["dead_letter_orders"]
    assert p0.named("tx_commit") and p1.named("tx_commit")


def test_the_queue_of_the_unpartitioned_topology_is_unbound_and_drained(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    connection = Connection(workers=1)
    connection.queues.add("orders")  # left from before partitions were turned on
    consumer = make_consumer(monkeypatch, connection)
    unbound = [
        (a[0], k["routing_key"]) for c in connection.channels for a, k in c.named("queue_unbind")
    ]
    assert unbound == [("orders", "order"), ("orders", "cqrs.orders.order")]
    deliver_to = connection.subscribed("orders")  # consumed beside the partitions
    deliver_to.deliver(
        deliver_to,
        SimpleNamespace(routing_key="order", delivery_tag=3),
        SimpleNamespace(headers={}),
        b"{}",
    )
    (message,) = consumer.take()
    assert message.handle == ("orders", 3)
    assert consumer.queues == ["orders.p0", "orders.p1", "orders.p2", "orders.p3"]  # not balanced


def test_looking_for_that_queue_logs_no_pika_warning_when_it_does_not_exist(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The usual case of every start: before, each worker logged pika's "Received remote
    # Channel.Close (404): NOT_FOUND - no queue 'orders'" at WARNING, as if something were wrong.
    with caplog.at_level(logging.INFO):
        loop = make_consumer(monkeypatch, Connection(workers=1))
    assert [c.consuming for c in loop.fake.channels if c.consuming] == loop.queues
    assert not [r for r in caplog.records if r.name.startswith("pika")], caplog.text


def test_without_that_queue_nothing_is_unbound(consumer: Any) -> None:
    assert not [c for c in consumer.fake.channels if c.named("queue_unbind")]
    assert [c.consuming for c in consumer.fake.channels if c.consuming] == consumer.queues


def test_a_broker_without_the_plugin_stops_the_loop_with_e100(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Reconnecting cannot help: the worker stops with the message (it exits with code 78)."""
    connection = Connection(workers=1)

    def refuse(self: Channel, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("exchange_type") == "x-consistent-hash":
            raise pika.exceptions.ConnectionClosedByBroker(
                503, "COMMAND_INVALID - unknown exchange type 'x-consistent-hash'"
            )

    monkeypatch.setattr(Channel, "exchange_declare", refuse)
    monkeypatch.setattr(rabbit_partitions, "open_blocking_connection", lambda *a, **k: connection)
    config = cqrs_with(transport="rabbitmq", queue="orders", replica={"partitions": 2})
    with override_settings(CQRS=config):
        loop = PartitionedRabbitMQConsumer(
            cqrs_ids=["order"], handler=lambda batch, wait, service: []
        )
        with pytest.raises(
            ConfigurationError,
            match="dj_cqrs.E100.*rabbitmq-plugins enable rabbitmq_consistent_hash_exchange",
        ):
            loop.run()
    assert loop.reconnects == 0 and not connection.is_open


def test_a_clean_stop_closes_every_partition_channel_without_cancelling_first(
    consumer: Any,
) -> None:
    channels = [consumer.fake.subscribed(name) for name in consumer.queues]
    consumer.close()
    assert all(c.named("close") == [((), {"uncancelled": []})] for c in channels)
    assert not consumer.fake.is_open
