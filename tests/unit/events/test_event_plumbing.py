"""Domain events beside the rest: dead letters (list, filter, retry), system checks, the router of
the default consume handler, and per-key publication order in the outbox."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
from django.core.management import call_command
from django.db import transaction
from django.test import override_settings

from dj_cqrs import events
from dj_cqrs.core.dead_letter_store import DeadLetter
from dj_cqrs.core.event import EventPayload
from dj_cqrs.core.handlers import default_handler
from dj_cqrs.core.messages import InboundMessage
from dj_cqrs.core.names import event_name_of
from dj_cqrs.events import registry
from dj_cqrs.master.outbox import event_order, publishing
from dj_cqrs.master.outbox.store import outbox_model, read_rows
from dj_cqrs.replica import dead_letters
from dj_cqrs.testing import use_memory_transport
from dj_cqrs.transport.memory import MemoryTransport
from tests.unit.conftest import cqrs_with

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def transport() -> Iterator[MemoryTransport]:
    with override_settings(CQRS=cqrs_with(master={"outbox_publish": "sync"})), use_memory_transport() as memory:
        yield memory


@pytest.fixture
def clean_handlers() -> Iterator[None]:
    before = {h.name for h in registry.handlers()}
    yield
    for h in registry.handlers():
        if h.name not in before:
            registry.unregister(h.name)


def _command(*args: str) -> str:
    out = io.StringIO()
    call_command("cqrs_dead_letters", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_dead_letters_of_events_are_listed_filtered_and_retried(transport: MemoryTransport, clean_handlers: None) -> None:
    fixed: list[bool] = []
    handled: list[str] = []

    @events.handler("order.paid", name="needs-fix")
    def needs_fix(event: EventPayload) -> None:
        if not fixed:
            raise events.Permanent("customer unknown")
        handled.append(event.id)

    event_id = events.emit("order.paid", 5, {"n": 1})
    transport.join()
    assert len(transport.dead_letters) == 1
    summary = _command("summary", "--cqrs-id", "order.paid")
    assert "order.paid" in summary and "permanent" in summary
    assert event_id in _command("dump", "--cqrs-id", "order.paid")
    assert _command("count", "--cqrs-id", "order.paid").strip().endswith("1")
    fixed.append(True)
    _command("retry", "--cqrs-id", "order.paid")
    transport.join()
    assert handled == [event_id]
    assert transport.dead_letters == []


def test_retry_message_of_an_event_goes_to_this_queue_only() -> None:
    body = {
        "dj_cqrs_event": 1, "id": "e1", "name": "order.paid", "key": "5", "seq": 3, "version": 1, "data": {},
        "meta": None, "occurred_at": "2026-12-02T10:00:00+00:00", "correlation_id": None, "retries": 7,
        "expires": "2000-01-01T00:00:00+00:00",
    }
    letter = DeadLetter(json.dumps(body).encode(), {"x-cqrs-routing-key": "dj_cqrs.event.order.paid", "x-cqrs-reason": "expired"})
    assert letter.cqrs_id == "order.paid"
    routing_key, raw, headers = dead_letters.retry_message(letter, "replica")
    assert routing_key == "cqrs.replica.dj_cqrs.event.order.paid"
    assert event_name_of(routing_key) == "order.paid"
    again = json.loads(raw)
    assert again["retries"] == 0 and again["expires"] is None or again["expires"] > "2026"
    assert headers == {"x-cqrs-routing-key": "dj_cqrs.event.order.paid"}


def test_unknown_name_is_refused_by_the_dead_letter_command(transport: MemoryTransport) -> None:
    from django.core.management.base import CommandError  # noqa: PLC0415

    with pytest.raises(CommandError, match="Wrong CQRS ID"):
        call_command("cqrs_dead_letters", "dump", "--cqrs-id", "nobody.handles.this")


def test_checks_want_a_queue_and_a_known_database(clean_handlers: None) -> None:
    @events.handler("a.#", name="elsewhere", using="nowhere")
    def elsewhere(event: EventPayload) -> None:
        pass

    from dj_cqrs.checks import check_event_handlers  # noqa: PLC0415

    with override_settings(CQRS=cqrs_with(queue=None)):
        ids = {m.id for m in check_event_handlers()}
    assert {"dj_cqrs.E013", "dj_cqrs.E014"} <= ids


def test_bad_events_setting_is_reported() -> None:
    from dj_cqrs.checks import check_settings  # noqa: PLC0415

    with override_settings(CQRS=cqrs_with(events={"inbox_retention": -1, "nope": 1})):
        found = {(m.id, m.msg) for m in check_settings()}
    assert any(i == "dj_cqrs.E012" and "inbox_retention" in msg for i, msg in found)
    assert any(i == "dj_cqrs.W001" and "'nope'" in msg for i, msg in found)


def test_the_router_keeps_delivery_order_across_kinds(transport: MemoryTransport, clean_handlers: None) -> None:
    order: list[str] = []

    @events.handler("#", name="recorder")
    def recorder(event: EventPayload) -> None:
        order.append(f"event {event.key}")

    from tests.apps.replica_app.models import SimplestModelRef  # noqa: PLC0415

    model_body = {
        "signal_type": "SAVE", "cqrs_id": "simplest", "instance_pk": 1,
        "instance_data": {"id": 1, "name": "x", "cqrs_revision": 0, "cqrs_updated": "2026-12-02T10:00:00+00:00"},
    }
    events.emit("a.b", 1, {})
    [event_message] = transport.published
    messages = [
        InboundMessage(event_message.body, event_message.routing_key),
        InboundMessage(json.dumps(model_body).encode(), "simplest"),
        InboundMessage(event_message.body.replace(b'"key":"1"', b'"key":"2"').replace(event_message.body[25:61], b"0" * 36), "x"),
    ]
    outcomes = default_handler()(messages, None)
    assert [o.action.value for o in outcomes] == ["ack", "ack", "ack"]
    assert order == ["event 1", "event 2"]  # the third is an event by its body, whatever its routing key
    assert SimplestModelRef.objects.filter(id=1).exists()


def test_publishers_keep_per_key_order(transport: MemoryTransport) -> None:
    with override_settings(CQRS=cqrs_with(master={"outbox_publish": "relay"})):
        for key in ("k1", "k1", "k2", "k1"):
            events.emit("a.b", key, {})
    ids = list(outbox_model().objects.order_by("id").values_list("id", flat=True))
    rows = read_rows(outbox_model().objects.filter(id__in=ids[1:]).order_by("id"))
    # a publisher holding rows 2..4 must not send k1's later events while k1's first is pending
    assert event_order.held_back("default", rows, {r.pk for r in rows}) == {ids[1], ids[3]}
    with transaction.atomic():
        assert event_order.lock_older("default", ["k1"], ids[3], {ids[3]}) == [ids[0], ids[1]]
    # the sweep publishes everything in id order; each key in its emit order
    assert publishing.claim_and_publish("default", 100) == 4
    assert [(e.key, e.seq) for e in transport.events] == [("k1", 1), ("k1", 2), ("k2", 1), ("k1", 3)]


def test_dispatcher_sends_older_pending_events_of_its_keys_first(transport: MemoryTransport) -> None:
    with override_settings(CQRS=cqrs_with(master={"outbox_publish": "relay"})):
        events.emit("a.b", "k", {"n": 1})  # left pending (no publisher)
    events.emit("a.b", "k", {"n": 2})
    assert [e.data["n"] for e in transport.events] == [1, 2]
    assert not outbox_model().objects.filter(published_at__isnull=True).exists()



def test_inbox_rows_are_pruned_after_the_retention(transport: MemoryTransport, clean_handlers: None) -> None:
    import datetime  # noqa: PLC0415

    from django.utils import timezone  # noqa: PLC0415

    from dj_cqrs.events import inbox  # noqa: PLC0415
    from dj_cqrs.models import InboxEntry  # noqa: PLC0415

    @events.handler("a.#", name="pruned")
    def pruned(event: EventPayload) -> None:
        pass

    for key in range(3):
        events.emit("a.b", key, {})
    transport.join()
    assert InboxEntry.objects.count() == 3
    InboxEntry.objects.filter(key="0").update(handled_at=timezone.now() - datetime.timedelta(days=8))
    inbox._last_prune.clear()
    with override_settings(CQRS=cqrs_with(events={"inbox_retention": 7 * 86400})):
        assert inbox.prune_if_due("default") == 1
        assert inbox.prune_if_due("default") == 0  # at most once an hour
    assert sorted(InboxEntry.objects.values_list("key", flat=True)) == ["1", "2"]
    inbox._last_prune.clear()
    with override_settings(CQRS=cqrs_with(events={"inbox_retention": None})):
        assert inbox.prune_if_due("default") == 0


def test_events_carry_the_correlation_id_of_their_scope(transport: MemoryTransport) -> None:
    from dj_cqrs.correlation import correlation_scope  # noqa: PLC0415

    with correlation_scope("req-42"):
        events.emit("a.b", 1, {})
    events.emit("a.b", 2, {})
    assert [e.correlation_id for e in transport.events] == ["req-42", None]
