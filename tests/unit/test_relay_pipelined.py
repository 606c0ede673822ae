"""The relay with a transport that sends and confirms batches separately (as RabbitMQ does): the
next batch is claimed and sent while the previous one's confirms are awaited, rows are marked
published only after their batch was confirmed, and a failed confirm leaves every row of the
window pending (published again later, never lost)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings

from dj_cqrs.core.payload import TransportPayload
from dj_cqrs.exceptions import PublishFailed
from dj_cqrs.master import relay as relay_module
from dj_cqrs.master.relay import Relay
from dj_cqrs.models import OutboxEvent
from dj_cqrs.testing import set_transport
from dj_cqrs.transport import reset_transport
from dj_cqrs.transport.base import BaseTransport
from tests.apps.master_app.models import SimplestModel
from tests.unit.conftest import cqrs_with

pytestmark = pytest.mark.django_db(transaction=True)


class PipelinedTransport(BaseTransport):
    """Records what is sent and confirmed; ``fail_confirm`` makes that confirm raise."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []
        self.confirmed: list[Any] = []
        self.fail_confirm: int | None = None
        self.pending_when_confirmed: list[int] = []

    def produce(self, payload: TransportPayload) -> None:
        self.produce_many([payload])

    def produce_many(self, payloads: Any) -> None:
        self.confirmed.extend(p.pk for p in payloads)

    def send_batch(self, payloads: list[TransportPayload]) -> list[TransportPayload]:
        self.events.append(("send", len(payloads)))
        return payloads

    def confirm_batch(self, batch: list[TransportPayload]) -> None:
        number = sum(1 for kind, _ in self.events if kind == "confirm") + 1
        self.events.append(("confirm", len(batch)))
        if number == self.fail_confirm:
            raise PublishFailed("not confirmed")
        self.pending_when_confirmed.append(OutboxEvent.objects.filter(published_at__isnull=True).count())
        self.confirmed.extend(p.pk for p in batch)


@pytest.fixture
def transport():
    fake = PipelinedTransport()
    with override_settings(CQRS=cqrs_with(master={"outbox_publish": "relay"})):
        set_transport(fake)
        try:
            yield fake
        finally:
            set_transport(None)
            reset_transport()


def make_rows(count: int) -> list[int]:
    objs = SimplestModel.cqrs.bulk_create([SimplestModel(id=i, name=f"n{i}") for i in range(1, count + 1)])
    return [obj.pk for obj in objs]


def test_batches_overlap_and_every_row_is_published_once(transport, monkeypatch):
    monkeypatch.setattr(relay_module, "WINDOW", 3)
    monkeypatch.setattr(relay_module, "SMALL_WINDOW", 3)
    pks = make_rows(25)
    assert OutboxEvent.objects.filter(published_at__isnull=True).count() == 25
    assert Relay(["default"], min_age=0, batch_size=10).run_once() == 25
    # window 1: batches of 10 and 10 (the second sent before the first is confirmed); window 2: 5
    assert transport.events == [
        ("send", 10), ("send", 10), ("confirm", 10), ("send", 5), ("confirm", 10), ("confirm", 5),
    ]
    assert sorted(transport.confirmed) == pks
    assert not OutboxEvent.objects.filter(published_at__isnull=True).exists()


def test_rows_are_marked_only_after_their_confirm(transport):
    make_rows(20)
    Relay(["default"], min_age=0, batch_size=10).run_once()
    # seen from the window's transaction: when the first batch is confirmed nothing is marked,
    # when the second is, the first batch is
    assert transport.pending_when_confirmed == [20, 10]


def test_a_failed_confirm_leaves_the_whole_window_pending_then_it_is_published(transport):
    pks = make_rows(30)
    transport.fail_confirm = 2
    with pytest.raises(PublishFailed):
        Relay(["default"], min_age=0, batch_size=10).run_once()
    assert OutboxEvent.objects.filter(published_at__isnull=True).count() == 30  # marks rolled back
    transport.fail_confirm = None
    transport.confirmed.clear()
    assert Relay(["default"], min_age=0, batch_size=10).run_once() == 30
    assert sorted(transport.confirmed) == pks
    assert not OutboxEvent.objects.filter(published_at__isnull=True).exists()


def test_a_patched_transport_is_not_pipelined(transport, monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(PipelinedTransport, "produce_many", lambda self, payloads: calls.append(len(list(payloads))))
    make_rows(15)
    assert Relay(["default"], min_age=0, batch_size=10).run_once() == 15
    assert sum(calls) == 15  # through the patched method (one by one, as django-cqrs's tests expect)
    assert transport.events == []
