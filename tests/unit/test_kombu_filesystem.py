"""The ``filesystem://`` channel used by ``KombuTransport`` writes each message file atomically."""

from __future__ import annotations

import copy
import queue as queue_module

import kombu
import pytest
from django.conf import settings as django_settings

from dj_cqrs.transport.kombu_connection import new_connection
from dj_cqrs.transport.kombu_filesystem import Transport


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "messages"
    path.mkdir()
    return path


def _connection(folder):
    options = {"data_folder_in": str(folder), "data_folder_out": str(folder)}
    return kombu.Connection("filesystem://", transport_options=options, transport=Transport)


def test_kombu_transport_uses_it_for_filesystem_urls(settings, folder):
    settings.CQRS = {
        **copy.deepcopy(django_settings.CQRS),
        "transport": "dj_cqrs.transport.KombuTransport",
        "url": "filesystem://",
        "transport_options": {"data_folder_in": str(folder), "data_folder_out": str(folder)},
    }
    with new_connection() as conn:
        assert conn.get_transport_cls() is Transport


def test_other_urls_keep_kombus_transport(settings):
    settings.CQRS = {**copy.deepcopy(django_settings.CQRS), "url": "memory://"}
    with new_connection() as conn:
        assert conn.get_transport_cls() is not Transport


def test_a_message_is_one_complete_file(folder):
    with _connection(folder) as conn:
        channel = conn.channel()
        channel._put("q", {"body": "hello"})
        names = [p.name for p in folder.iterdir()]
        assert len(names) == 1 and names[0].endswith(".q.msg") and not names[0].startswith(".")
        assert channel._size("q") == 1
        assert channel._get("q") == {"body": "hello"}
        assert list(folder.iterdir()) == []


def test_a_file_being_written_is_invisible_to_consumers(folder):
    # What a consumer sees while a producer is between creating the file and writing its body.
    (folder / ".1_00000000-0000-0000-0000-000000000000.q.msg.partial").write_bytes(b"")
    with _connection(folder) as conn:
        channel = conn.channel()
        assert channel._size("q") == 0
        with pytest.raises(queue_module.Empty):
            channel._get("q")
