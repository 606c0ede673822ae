"""``CQRS['transport_options']``: validated, and handed to kombu by ``KombuTransport``.

The round trip runs over kombu's ``filesystem://`` transport in a temporary folder, so it needs no
server: it is the path ``make demo`` takes.
"""

from __future__ import annotations

import copy

import pytest
from django.conf import settings as django_settings

from dj_cqrs.conf import cqrs_settings, validate
from dj_cqrs.exceptions import ConfigurationError
from dj_cqrs.transport import get_transport
from dj_cqrs.transport.kombu import KombuTransport
from dj_cqrs.transport.kombu_connection import new_connection
from dj_cqrs.transport.kombu_consumer import KombuConsumer
from tests.apps.master_app.models import SimplestModel
from tests.apps.replica_app.models import SimplestModelRef


def _problems(options):
    raw = {"transport": "dj_cqrs.transport.KombuTransport", "transport_options": options}
    return [p.id for p in validate(raw, has_masters=True, has_replicas=False)]


def test_transport_options_accepts_a_dict_or_none():
    assert _problems({"data_folder_in": "/tmp/x", "polling_interval": 0.1}) == []
    assert _problems(None) == []


@pytest.mark.parametrize("bad", ["data_folder_in=/tmp", ["a"], {1: "x"}])
def test_transport_options_rejects_other_values(bad, settings):
    assert _problems(bad) == ["dj_cqrs.E005"]
    settings.CQRS = {**django_settings.CQRS, "transport_options": bad}
    with pytest.raises(ConfigurationError, match="dj_cqrs.E005: CQRS\\['transport_options'\\]"):
        assert cqrs_settings.transport_options is None  # raises first


def test_transport_options_default_is_none():
    assert cqrs_settings.transport_options is None


@pytest.fixture
def filesystem_cqrs(settings, tmp_path):
    folder = tmp_path / "messages"
    folder.mkdir()
    options = {
        "data_folder_in": str(folder),
        "data_folder_out": str(folder),
        "control_folder": str(tmp_path / "control"),
        "polling_interval": 0.05,
    }
    settings.CQRS = {
        **copy.deepcopy(django_settings.CQRS),
        "transport": "dj_cqrs.transport.KombuTransport",
        "url": "filesystem://",
        "exchange": "fs_exchange",
        "queue": "fs_replica",
        "transport_options": options,
    }
    yield options, folder
    get_transport().close()


@pytest.mark.django_db(transaction=True)
def test_filesystem_round_trip_uses_transport_options(filesystem_cqrs):
    options, folder = filesystem_cqrs
    transport = get_transport()
    assert isinstance(transport, KombuTransport)
    # The replica declares its queue and bindings first (published messages need a binding).
    queue, dlq, *_retry = transport.queues(["simplest"])
    with new_connection() as conn:
        channel = conn.channel()
        queue(channel).declare()
        dlq(channel).declare()

    obj = SimplestModel.objects.create(name="over the filesystem")
    files = [p.name for p in folder.iterdir()]
    assert len(files) == 1 and files[0].endswith(".fs_replica.msg")
    # The user's options are copied, never mutated by kombu.
    assert settings_options() == options

    KombuConsumer(transport, max_messages=1, idle_timeout=10).run()
    ref = SimplestModelRef.objects.get(pk=obj.pk)
    assert (ref.name, ref.cqrs_revision) == ("over the filesystem", 0)
    assert list(folder.iterdir()) == []


def settings_options():
    return django_settings.CQRS["transport_options"]
