"""Resolving ``CQRS['transport']``: aliases, dotted paths, errors, caching and the legacy names."""

from __future__ import annotations

import pytest
from django.test import override_settings

import dj_cqrs.transport as transport_module
from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.exceptions import ConfigurationError
from dj_cqrs.testing import use_memory_transport
from dj_cqrs.transport import get_transport, reset_transport, resolve_transport_class, set_transport
from dj_cqrs.transport.base import BaseTransport
from dj_cqrs.transport.kombu import KombuTransport
from dj_cqrs.transport.memory import MemoryTransport
from dj_cqrs.transport.mock import TransportMock
from dj_cqrs.transport.rabbit_mq import RabbitMQTransport
from tests.unit.conftest import cqrs_with


class NotATransport:
    pass


@pytest.fixture(autouse=True)
def _fresh_transport():
    reset_transport()
    yield
    reset_transport()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("rabbitmq", RabbitMQTransport),
        ("kombu", KombuTransport),
        ("memory", MemoryTransport),
        ("mock", TransportMock),
        ("dj_cqrs.transport.RabbitMQTransport", RabbitMQTransport),
        ("dj_cqrs.transport.KombuTransport", KombuTransport),
        ("dj_cqrs.transport.rabbit_mq.RabbitMQTransport", RabbitMQTransport),
        ("dj_cqrs.transport.kombu.KombuTransport", KombuTransport),
        ("dj_cqrs.transport.mock.TransportMock", TransportMock),
        (MemoryTransport, MemoryTransport),
    ],
)
def test_aliases_and_dotted_paths(value, expected):
    assert resolve_transport_class(value) is expected


@pytest.mark.parametrize(
    ("value", "check_id"),
    [
        ("no.such.module.Transport", "dj_cqrs.E003"),
        ("rabbit", "dj_cqrs.E003"),
        ("tests.unit.transport.test_resolution.NotATransport", "dj_cqrs.E004"),
        (NotATransport, "dj_cqrs.E004"),
        (None, "dj_cqrs.E002"),
        ("", "dj_cqrs.E002"),
    ],
)
def test_bad_transport_raises_a_configuration_error_with_its_check_id(value, check_id):
    with pytest.raises(ConfigurationError, match=check_id):
        resolve_transport_class(value)


def test_get_transport_raises_instead_of_returning_none():
    with override_settings(CQRS=cqrs_with(transport="no.such.Transport")):
        with pytest.raises(ConfigurationError, match="dj_cqrs.E003"):
            get_transport()
        with pytest.raises(ConfigurationError, match="dj_cqrs.E003"):
            transport_module.current_transport  # noqa: B018


def test_get_transport_is_cached_until_the_setting_changes():
    first = get_transport()
    assert isinstance(first, MemoryTransport)
    assert get_transport() is first
    assert transport_module.current_transport is first

    with override_settings(CQRS=cqrs_with(transport="mock")):
        mock = get_transport()
        assert isinstance(mock, TransportMock)
    assert isinstance(get_transport(), MemoryTransport)
    assert get_transport() is not first


def test_legacy_class_names_resolve_on_attribute_access():
    assert transport_module.RabbitMQTransport is RabbitMQTransport
    assert transport_module.KombuTransport is KombuTransport
    with pytest.raises(AttributeError, match="no_such_name"):
        transport_module.no_such_name  # noqa: B018


def test_transport_instances_connect_lazily():
    # Building the broker transports opens no connection (they connect on first publish).
    for cls in (RabbitMQTransport, KombuTransport):
        instance = cls()
        assert isinstance(instance, BaseTransport)
        instance.close()


def test_transport_mock_returns_the_payload_and_consumes_nothing():
    payload = TransportPayload("SAVE", "simplest", {"id": 1}, 1)
    mock = TransportMock()
    assert mock.produce(payload) is payload
    assert mock.consume() is None
    mock.produce_many([payload])


@pytest.mark.django_db(transaction=True)
def test_mock_transport_from_settings_accepts_publishes():
    from tests.apps.master_app.models import SimplestModel

    with override_settings(CQRS=cqrs_with(transport="mock")):
        assert isinstance(get_transport(), TransportMock)
        SimplestModel.objects.create(name="a")


def test_set_transport_none_goes_back_to_the_settings():
    explicit = MemoryTransport()
    set_transport(explicit)
    assert get_transport() is explicit
    set_transport(None)
    assert get_transport() is not explicit


@pytest.mark.django_db(transaction=True)
def test_memory_transport_survives_a_cqrs_settings_change_inside_its_block():
    from tests.apps.master_app.models import SimplestModel

    with use_memory_transport() as memory:
        with override_settings(CQRS=cqrs_with(master={"CQRS_MESSAGE_TTL": None})):
            assert get_transport() is memory
            SimplestModel.objects.create(name="a")
        assert get_transport() is memory
    [message] = memory.published
    assert message.data["expires"] is None
    assert get_transport() is not memory
