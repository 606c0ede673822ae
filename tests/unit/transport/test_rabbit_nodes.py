"""``CQRS['url']`` naming the nodes of a cluster: parsing, the order nodes are tried in, fail-over
to the next node, the system checks, and one URL behaving as before. No broker: pika's
``BlockingConnection`` is replaced by a fake cluster whose nodes answer or not."""

from __future__ import annotations

import copy
from unittest import mock

import pika
import pika.connection
import pika.exceptions
import pytest
from django.test import override_settings

from dj_cqrs.checks import check_settings
from dj_cqrs.core.broker_urls import (
    broker_urls,
    is_cluster,
    is_url_value,
    url_vhost,
    without_password,
)
from dj_cqrs.transport.rabbit_connection import (
    connection_parameters,
    display_url,
    open_blocking_connection,
)
from dj_cqrs.transport.rabbit_nodes import BrokerNodes, node_parameters
from tests.unit.conftest import cqrs_with

NODES = [
    "amqp://svc:s3cret@rabbit-1:5672/prod",
    "amqp://svc:s3cret@rabbit-2:5673/prod?heartbeat=5",
    "amqp://svc:s3cret@rabbit-3:5674/prod",
]


def rabbit(url):
    return override_settings(
        CQRS=cqrs_with(transport="dj_cqrs.transport.RabbitMQTransport", url=url)
    )


# -- the setting's value -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "urls"),
    [
        (None, []),
        ("", []),
        ("amqp://h/", ["amqp://h/"]),
        (NODES, NODES),
        (tuple(NODES), NODES),
        (";".join(NODES), NODES),
        (" amqp://a/ ; amqp://b/ ;", ["amqp://a/", "amqp://b/"]),
        # One URL is kept whole, whatever it contains: a ';' in a password splits nothing.
        ("amqp://u:pa;ss@h/", ["amqp://u:pa;ss@h/"]),
        ("amqp://u:x;amqp@h/", ["amqp://u:x;amqp@h/"]),
    ],
)
def test_broker_urls(value, urls):
    assert broker_urls(value) == urls
    assert is_cluster(value) is (len(urls) > 1)


@pytest.mark.parametrize("value", [None, "amqp://h/", "", NODES, ("amqp://h/",)])
def test_valid_shapes(value):
    assert is_url_value(value)


@pytest.mark.parametrize(
    "value", [[], (), ["amqp://h/", 5], ["amqp://h/", " "], 42, {"url": "amqp://h/"}]
)
def test_invalid_shapes(value):
    assert not is_url_value(value)


@pytest.mark.parametrize(
    "url",
    [
        "amqp://h/prod",
        "amqp://h/%2F",
        "amqp://h",
        "amqp://h/",
        "amqp://u:p@h:1/my%2Fvhost?heartbeat=3",
        "amqp://h/a/b",
    ],
)
def test_vhost_is_read_as_pika_reads_it(url):
    assert url_vhost(url) == pika.URLParameters(url).virtual_host


def test_passwords_are_hidden():
    assert (
        without_password("amqp://svc:s3cret@rabbit-1:5672/prod")
        == "amqp://svc:***@rabbit-1:5672/prod"
    )
    assert without_password("amqp://rabbit-1/") == "amqp://rabbit-1/"
    with rabbit(NODES):
        shown = display_url()
    assert "s3cret" not in shown
    assert shown.count("svc:***@") == 3 and "rabbit-3:5674" in shown


# -- parameters ----------------------------------------------------------------------------------


def test_every_node_gets_its_own_parameters():
    with rabbit(NODES):
        nodes = node_parameters("consumer")
    assert [(p.host, p.port, p.virtual_host) for p in nodes] == [
        ("rabbit-1", 5672, "prod"),
        ("rabbit-2", 5673, "prod"),
        ("rabbit-3", 5674, "prod"),
    ]
    assert [p.heartbeat for p in nodes][1] == 5
    assert all(p.blocked_connection_timeout == 60 for p in nodes)
    assert all(
        p.client_properties["connection_name"].startswith("dj_cqrs consumer ") for p in nodes
    )


def test_connection_parameters_of_a_cluster_is_the_first_node():
    with rabbit(NODES):
        assert connection_parameters().host == "rabbit-1"


def test_one_url_is_one_parameters_object_as_before():
    with rabbit("amqp://svc:s3cret@rabbit-1:5672/prod"):
        [node] = node_parameters()
        single = connection_parameters()
    assert (node.host, node.port) == (single.host, single.port) == ("rabbit-1", 5672)


# -- the order nodes are tried in ----------------------------------------------------------------


class FakeCluster:
    """Stands in for ``pika.BlockingConnection``: connects to the first given node whose port is
    up (pika's multi-host behaviour), records what it was given."""

    def __init__(self, up: set[int]) -> None:
        self.up = up
        self.calls: list[object] = []

    def __call__(self, parameters):
        self.calls.append(parameters)
        candidates = parameters if isinstance(parameters, list) else [parameters]
        for params in candidates:
            if params.port in self.up:
                connection = mock.Mock(name=f"connection to {params.port}")
                # pika's Connection keeps a deep copy of the parameters it connected with.
                connection._impl.params = copy.deepcopy(params)
                return connection
        raise pika.exceptions.AMQPConnectionError("no node answered")

    def ports(self, call: int) -> list[int]:
        given = self.calls[call]
        return [p.port for p in given] if isinstance(given, list) else [given.port]


def test_nodes_are_tried_in_the_configured_order():
    cluster = FakeCluster({5672, 5673, 5674})
    with rabbit(NODES), mock.patch("pika.BlockingConnection", cluster):
        nodes = BrokerNodes("consumer")
        nodes.connect()
    assert cluster.ports(0) == [5672, 5673, 5674]
    assert (nodes.current, nodes.current_label) == (0, "rabbit-1:5672")


def test_a_node_that_does_not_answer_is_skipped():
    cluster = FakeCluster({5673, 5674})
    with rabbit(NODES), mock.patch("pika.BlockingConnection", cluster):
        nodes = BrokerNodes("producer")
        nodes.connect()
    assert nodes.current == 1 and nodes.current_label == "rabbit-2:5673"


def test_after_a_lost_connection_the_next_node_is_tried_first_and_the_lost_one_last():
    cluster = FakeCluster({5672, 5673, 5674})
    with rabbit(NODES), mock.patch("pika.BlockingConnection", cluster):
        nodes = BrokerNodes("consumer")
        nodes.connect()
        nodes.lost()  # rabbit-1 died
        nodes.connect()
        assert cluster.ports(1) == [5673, 5674, 5672]
        assert nodes.current == 1
        nodes.lost()  # rabbit-2 died
        nodes.connect()
        assert cluster.ports(2) == [5674, 5672, 5673]
        nodes.lost()  # and rabbit-3: round again
        nodes.connect()
        assert cluster.ports(3) == [5672, 5673, 5674]


def test_lost_without_a_connection_changes_nothing():
    nodes = BrokerNodes("consumer")
    with rabbit(NODES):
        nodes.lost()
    assert nodes.start == 0
    assert nodes.ordered([mock.Mock()] * 3) == [0, 1, 2]


def test_attempts_override_applies_to_every_node():
    cluster = FakeCluster({5674})
    with rabbit(NODES), mock.patch("pika.BlockingConnection", cluster):
        BrokerNodes("producer").connect(attempts=1)
    assert [p.connection_attempts for p in cluster.calls[0]] == [1, 1, 1]


def test_one_url_passes_one_parameters_object_to_pika():
    cluster = FakeCluster({5672})
    with rabbit("amqp://h:5672/"), mock.patch("pika.BlockingConnection", cluster):
        nodes = BrokerNodes("producer")
        nodes.connect()
        nodes.lost()
        nodes.connect()
    assert all(isinstance(call, pika.connection.Parameters) for call in cluster.calls)
    assert nodes.start == 0


def test_no_node_answers_is_connection_failed():
    from dj_cqrs.exceptions import ConnectionFailed

    with rabbit(NODES), mock.patch("pika.BlockingConnection", FakeCluster(set())):
        with pytest.raises(ConnectionFailed):
            open_blocking_connection("dead-letters")


def test_the_consumer_fails_over_after_losing_its_node():
    from dj_cqrs.transport.rabbit_consumer import RabbitMQConsumer

    cluster = FakeCluster({5672, 5673, 5674})
    with rabbit(NODES), mock.patch("pika.BlockingConnection", cluster):
        consumer = RabbitMQConsumer(cqrs_ids=["it"])
        consumer.open()
        consumer.close(pika.exceptions.StreamLostError("node died"))
        consumer.open()
        consumer.close()  # a clean close does not move on
        consumer.open()
    assert [cluster.ports(i)[0] for i in range(3)] == [5672, 5673, 5673]


def test_the_publisher_fails_over_after_losing_its_node():
    from dj_cqrs.transport.rabbit_mq import _ThreadProducer

    cluster = FakeCluster({5672, 5673, 5674})
    with rabbit(NODES), mock.patch("pika.BlockingConnection", cluster):
        producer = _ThreadProducer()
        producer.connection = cluster(node_parameters())
        producer.nodes.current = 0
        producer.abort()  # what a failed publish does
        assert producer.nodes.ordered([mock.Mock()] * 3) == [1, 2, 0]


# -- system checks -------------------------------------------------------------------------------


def checks_for(url, transport="dj_cqrs.transport.RabbitMQTransport"):
    with override_settings(CQRS=cqrs_with(transport=transport, url=url)):
        return check_settings()


def test_a_list_of_good_urls_passes():
    assert checks_for(NODES) == []
    assert checks_for(";".join(NODES)) == []


def test_a_bad_node_url_is_e011_naming_the_node():
    [error] = checks_for([NODES[0], "amqp://h:notaport/prod"])
    assert error.id == "dj_cqrs.E011"
    assert "Node 2" in error.msg


def test_a_node_of_another_scheme_is_e011():
    [error] = checks_for([NODES[0], "redis://127.0.0.1:6379/0"])
    assert error.id == "dj_cqrs.E011" and "amqp://" in error.msg


def test_nodes_with_different_vhosts_are_e018():
    [error] = checks_for([NODES[0], "amqp://svc:s3cret@rabbit-2/staging"])
    assert error.id == "dj_cqrs.E018"
    assert "'prod'" in error.msg and "'staging'" in error.msg
    assert "s3cret" not in error.msg


def test_kombu_failover_urls_of_different_brokers_are_e018():
    [error] = checks_for(
        ["amqp://h1//", "redis://h2:6379/0"], transport="dj_cqrs.transport.KombuTransport"
    )
    assert error.id == "dj_cqrs.E018"
    assert (
        checks_for(["amqp://h1//", "amqps://h2//"], transport="dj_cqrs.transport.KombuTransport")
        == []
    )


@pytest.mark.parametrize("value", [[], ["amqp://h/", 5]])
def test_a_bad_shape_is_e005(value):
    assert [e.id for e in checks_for(value)] == ["dj_cqrs.E005"]


def test_kombu_gets_the_list_as_its_failover_list():
    from dj_cqrs.transport.kombu_connection import new_connection

    with override_settings(
        CQRS=cqrs_with(
            transport="dj_cqrs.transport.KombuTransport", url=["amqp://h1//", "amqp://h2//"]
        )
    ):
        connection = new_connection()
    assert connection.alt == ["amqp://h1//", "amqp://h2//"]
    assert connection.hostname == "h1"


def test_a_nacked_publish_is_retried_on_a_fresh_channel():
    """A channel whose publishes were nacked may keep nacking (a RabbitMQ 3.10 quorum queue after
    a leader change): the retry goes out on a new connection and channel."""
    from dj_cqrs.transport.rabbit_mq import RabbitMQTransport, _ThreadProducer

    answers = [[0, 1], []]  # the first attempt: both messages nacked; the second: confirmed
    events = []

    def publish(self, messages, fail_fast=False):
        events.append(("publish", len(messages)))
        return answers.pop(0)

    def close(self):
        events.append(("close",))

    message = ("ex", "k", b"{}", None, None)
    cqrs = cqrs_with(
        transport="dj_cqrs.transport.RabbitMQTransport",
        url=NODES,
        master={"publish_retry_delay": 0},
    )
    with (
        override_settings(CQRS=cqrs),
        mock.patch.object(_ThreadProducer, "publish", publish),
        mock.patch.object(_ThreadProducer, "close", close),
    ):
        RabbitMQTransport().publish_confirmed([message, message])
    assert events == [("publish", 2), ("close",), ("publish", 2)]
