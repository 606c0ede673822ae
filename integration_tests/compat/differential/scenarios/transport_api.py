"""Transport methods called on the class, as django-cqrs's classmethods and staticmethods were
(issue 10, audit entry 3): post-fork hooks call ``RabbitMQTransport.clean_connection()``, test
helpers call ``TransportMock.produce(payload)``."""

from __future__ import annotations

from typing import Any

from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.transport import BaseTransport
from dj_cqrs.transport.mock import TransportMock
from scenarios._base import documented, outcome, payload_view


def _payload() -> TransportPayload:
    return TransportPayload("SAVE", "diff_author", {"id": 1, "name": "a", "cqrs_revision": 0}, 1)


def check_transport_mock_static_methods() -> Any:
    payload = _payload()
    return {
        "produce_on_class": payload_view(TransportMock.produce(payload)),
        "produce_is_payload": TransportMock.produce(payload) is payload,
        "consume_on_class": TransportMock.consume(payload) is payload,
        "consume_keyword": TransportMock.consume(payload=payload) is payload,
        "consume_nothing": TransportMock.consume(),
        "produce_on_instance": TransportMock().produce(payload) is payload,
        "consume_on_instance": TransportMock().consume(payload) is payload,
    }


def check_base_transport_consumers() -> Any:
    return {"consumers": BaseTransport.consumers, "on_mock": TransportMock.consumers}


def check_clean_connection_on_the_class() -> Any:
    from dj_cqrs.transport.kombu import KombuTransport
    from dj_cqrs.transport.rabbit_mq import RabbitMQTransport

    return {
        "rabbit": outcome(lambda: RabbitMQTransport.clean_connection()),
        "rabbit_twice": outcome(lambda: RabbitMQTransport.clean_connection()),
        "kombu": outcome(lambda: KombuTransport.clean_connection()),
    }


@documented("`BaseTransport.clean_connection()` raises `NotImplementedError`")
def check_base_clean_connection() -> Any:
    return outcome(lambda: BaseTransport.clean_connection())
