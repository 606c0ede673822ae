"""``CQRS['url']`` as a list of nodes, on the machine's RabbitMQ (no cluster needed): node 1 is a
TCP proxy to it that the test cuts, node 2 the broker itself. The consumer fails over from the
cut node to the other and the master connects to the first node that answers. The real cluster,
with a node killed, is integration_tests/test_cluster.py."""

from __future__ import annotations

import json

from integration_tests.compat.flows import wait_converged
from integration_tests.harness import RABBIT_HOST, RABBIT_PORT, log_text, stop_process, wait_until
from integration_tests.proxy import TcpProxy
from integration_tests.test_core_flows import _queue_exists


def test_consumer_fails_over_to_the_next_node_and_master_skips_a_dead_one(fleet):
    with TcpProxy(RABBIT_HOST, RABBIT_PORT) as proxy:
        via_proxy = f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2F"
        direct = f"amqp://guest:guest@{RABBIT_HOST}:{RABBIT_PORT}/%2F"
        fleet.replica.env["IT_CQRS_URLS"] = json.dumps([via_proxy, direct])
        fleet.master.env["IT_CQRS_URLS"] = json.dumps(f"{via_proxy};{direct}")  # the ';' form
        consumer = fleet.replica.start("cqrs_consume")
        wait_until(lambda: _queue_exists(fleet.queue), 30, message="replica consuming")
        wait_until(lambda: proxy.connections >= 1, 10, message="the consumer on node 1 (the proxy)")

        state = fleet.master.scenario(
            [{"op": "create", "id": i, "fields": {"name": f"p{i}"}} for i in range(1, 21)]
        )
        wait_converged(fleet.replica, state, 30, "replicated through node 1")

        proxy.cut()  # node 1 dies: its connections close, new ones are refused
        state = fleet.master.scenario(
            [{"op": "update", "id": i, "fields": {"name": f"after {i}"}} for i in range(1, 21)]
        )
        wait_converged(fleet.replica, state, 60, "replicated through node 2 after the fail-over")

        text = log_text(consumer)
        assert f"CQRS consumer lost RabbitMQ node 127.0.0.1:{proxy.port}" in text, text[-3000:]
        assert consumer.poll() is None, text[-3000:]
        assert stop_process(consumer) == 0, log_text(consumer)[-3000:]
