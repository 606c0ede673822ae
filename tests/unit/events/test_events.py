"""Domain events on the in-memory transport: emit, publish after commit, handlers exactly once,
patterns, ordering, failures, sources. The same code paths run over RabbitMQ and kombu in
``integration_tests/test_events.py``."""

from __future__ import annotations

import datetime
import decimal
import io
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.db import transaction
from django.test import override_settings

from dj_cqrs import encoding, events
from dj_cqrs.core.event import EventPayload, topic_matches
from dj_cqrs.core.messages import Action
from dj_cqrs.core.reasons import Reason, Status
from dj_cqrs.events import registry
from dj_cqrs.events.sources import unregister_sources
from dj_cqrs.models import InboxEntry, OutboxEvent, SourceEmission
from dj_cqrs.testing import use_memory_transport
from dj_cqrs.transport.memory import MemoryTransport
from tests.apps.master_app.models import SimplestModel
from tests.unit.conftest import cqrs_with

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def transport() -> Iterator[MemoryTransport]:
    with override_settings(CQRS=cqrs_with(master={"outbox_publish": "sync"})), use_memory_transport() as memory:
        yield memory


@pytest.fixture
def calls() -> Iterator[list[tuple[str, Any]]]:
    """Handlers registered by a test record here; every handler is removed afterwards."""
    before = {h.name for h in registry.handlers()}
    seen: list[tuple[str, Any]] = []
    yield seen
    for h in registry.handlers():
        if h.name not in before:
            registry.unregister(h.name)


def _register(pattern: str, name: str, seen: list[tuple[str, Any]], **options: Any) -> None:
    def fn(event: EventPayload) -> None:
        seen.append((name, event))
        Group.objects.create(name=f"{name}:{event.id}"[:150])

    events.handler(pattern, name=name, **options)(fn)


def test_emit_publishes_after_commit_and_the_handler_runs_once(transport: MemoryTransport, calls: list[Any]) -> None:
    _register("order.*", "orders", calls)
    with transaction.atomic():
        event_id = events.emit(
            "order.paid", 42, {"total": decimal.Decimal("10.50"), "at": datetime.date(2026, 12, 2)}, meta={"by": "me"}
        )
        assert transport.events == []  # not before commit
    [published] = transport.events
    assert published.id == event_id and published.name == "order.paid" and published.key == "42"
    assert published.seq == 1 and published.version == 1 and published.meta == {"by": "me"}
    assert transport.published[-1].routing_key == "dj_cqrs.event.order.paid"
    raw = transport.published[-1].body
    body = json.loads(raw)
    assert list(body) == [
        "dj_cqrs_event", "id", "name", "key", "seq", "version", "data", "meta", "occurred_at", "correlation_id",
        "retries", "expires",
    ]
    assert b'"data":{"total":10.50,"at":"2026-12-02"}' in raw  # the encoder of model events: exact decimals
    transport.join()
    assert [(n, e.id) for n, e in calls] == [("orders", event_id)]
    assert calls[0][1].data == {"total": 10.5, "at": "2026-12-02"}
    assert OutboxEvent.objects.get(cqrs_id="order.paid").published_at is not None
    # the same message delivered again (a redelivery, a second publication): skipped
    message = transport.published[-1]
    transport.send_raw(message.body, message.routing_key)
    transport.join()
    assert len(calls) == 1
    assert transport.outcomes[-1].status == Status.IGNORED_DUPLICATE
    assert Group.objects.filter(name=f"orders:{event_id}").count() == 1


def test_rolled_back_event_is_never_published(transport: MemoryTransport) -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        events.emit("order.paid", 1, {})
        raise RuntimeError("rollback")
    with transaction.atomic():
        events.emit("order.created", 1, {})
        sid = transaction.savepoint()
        events.emit("order.paid", 1, {})
        transaction.savepoint_rollback(sid)
    assert [e.name for e in transport.events] == ["order.created"]
    assert list(OutboxEvent.objects.values_list("cqrs_id", flat=True)) == ["order.created"]


def test_sequence_per_key_in_emit_order(transport: MemoryTransport) -> None:
    for name, key in [("a.x", 1), ("b.y", 1), ("a.x", 2), ("a.z", 1)]:
        events.emit(name, key, {})
    assert [(e.key, e.seq) for e in transport.events] == [("1", 1), ("1", 2), ("2", 1), ("1", 3)]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("", 1, {}), ValueError),
        (("order..paid", 1, {}), ValueError),
        (("order.*", 1, {}), ValueError),
        ((42, 1, {}), TypeError),
        (("order.paid", 1.5, {}), TypeError),
        (("order.paid", True, {}), TypeError),
        (("order.paid", "", {}), ValueError),
        (("order.paid", 1, ["not a dict"]), TypeError),
        (("order.paid", 1, {"x": float("nan")}), ValueError),
    ],
)
def test_bad_arguments_fail_before_anything_is_written(transport: MemoryTransport, args: Any, error: type) -> None:
    with pytest.raises(error):
        events.emit(*args)
    assert not OutboxEvent.objects.exists()
    assert transport.events == []


def test_uuid_key_and_version(transport: MemoryTransport) -> None:
    key = uuid.uuid4()
    events.emit("user.renamed", key, {"name": "x"}, version=3)
    [published] = transport.events
    assert published.key == str(key) and published.version == 3


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("order.*", "order.paid", True),
        ("order.*", "order.paid.late", False),
        ("order.#", "order", True),
        ("order.#", "order.paid.late", True),
        ("#.paid", "paid", True),
        ("#.paid", "order.paid", True),
        ("*.paid", "paid", False),
        ("#", "anything.at.all", True),
        ("order.*.late", "order.paid.late", True),
        ("order.paid", "order.paid", True),
        ("order.paid", "order.payd", False),
    ],
)
def test_topic_patterns(pattern: str, name: str, expected: bool) -> None:
    assert topic_matches(pattern, name) is expected


def test_bindings_follow_the_handlers(calls: list[Any]) -> None:
    assert registry.binding_keys("q") == []
    _register("order.*", "h1", calls)
    _register("#.paid", "h2", calls)
    assert registry.binding_keys("q") == ["dj_cqrs.event.order.*", "dj_cqrs.event.#.paid", "cqrs.q.dj_cqrs.event.#"]


def test_every_matching_handler_runs_no_handler_is_acknowledged(transport: MemoryTransport, calls: list[Any]) -> None:
    _register("order.*", "h-orders", calls)
    _register("#.paid", "h-paid", calls)
    events.emit("order.paid", 1, {})
    events.emit("invoice.paid", 1, {})
    events.emit("user.created", 1, {})
    transport.join()
    assert [(n, e.name) for n, e in calls] == [
        ("h-orders", "order.paid"),
        ("h-paid", "order.paid"),
        ("h-paid", "invoice.paid"),
    ]
    assert transport.outcomes[-1].action is Action.ACK and transport.outcomes[-1].status == Status.NO_HANDLER


def test_failing_handler_is_retried_and_rolled_back(transport: MemoryTransport, calls: list[Any]) -> None:
    attempts: list[int] = []

    @events.handler("order.paid", name="flaky")
    def flaky(event: EventPayload) -> None:
        attempts.append(event.retries)
        Group.objects.create(name=f"flaky:{event.id}:{len(attempts)}")
        if len(attempts) < 3:
            raise RuntimeError("not yet")

    _register("order.paid", "steady", calls)
    events.emit("order.paid", 7, {})
    transport.join()
    assert attempts == [0, 1, 2]
    assert len(calls) == 1  # the other handler ran once, its inbox row spared it the retries
    # the failed attempts left nothing: only the third attempt's row exists
    assert list(Group.objects.filter(name__startswith="flaky:").values_list("name", flat=True)) == [
        f"flaky:{transport.events[0].id}:3"
    ]
    assert set(InboxEntry.objects.values_list("handler", flat=True)) == {"flaky", "steady"}


def test_always_failing_handler_is_dead_lettered_with_its_reason(transport: MemoryTransport, calls: list[Any]) -> None:
    @events.handler("order.paid", name="broken")
    def broken(event: EventPayload) -> None:
        raise ValueError("no such customer")

    with override_settings(CQRS=cqrs_with(master={"outbox_publish": "sync"}, replica={"CQRS_MAX_RETRIES": 2})):
        events.emit("order.paid", 7, {})
        transport.join()
    [(message, outcome)] = transport.dead_letters
    assert outcome.reason == Reason.MAX_RETRIES and outcome.failure == Reason.EXCEPTION
    assert "handler broken: ValueError: no such customer" in outcome.detail
    assert json.loads(message.body)["retries"] == 2
    assert not InboxEntry.objects.exists()


def test_permanent_dead_letters_at_once(transport: MemoryTransport, calls: list[Any]) -> None:
    runs: list[int] = []

    @events.handler("order.paid", name="refuses")
    def refuses(event: EventPayload) -> None:
        runs.append(1)
        raise events.Permanent("cannot ship to the moon")

    events.emit("order.paid", 7, {})
    transport.join()
    assert runs == [1]
    [(_, outcome)] = transport.dead_letters
    assert outcome.reason == Reason.PERMANENT and "cannot ship to the moon" in outcome.detail


def test_ordered_handler_skips_an_older_event(transport: MemoryTransport, calls: list[Any]) -> None:
    _register("order.*", "ordered", calls, ordered=True)
    _register("order.*", "unordered", calls)
    events.emit("order.created", 9, {})
    events.emit("order.paid", 9, {})
    first, second = transport.published
    transport.messages = [second, first]  # the newer one arrives first (another worker, a retry ...)
    transport.join()
    assert [(n, e.seq) for n, e in calls if n == "ordered"] == [(2, 2)][0:0] + [("ordered", 2)]
    assert sorted(e.seq for n, e in calls if n == "unordered") == [1, 2]
    assert InboxEntry.objects.get(handler="ordered", seq=1).status == "ignored_stale"


def test_non_atomic_handler_runs_outside_a_transaction_once_recorded(transport: MemoryTransport, calls: list[Any]) -> None:
    seen: list[bool] = []

    @events.handler("mail.#", name="mailer", atomic=False)
    def mailer(event: EventPayload) -> None:
        seen.append(transaction.get_connection().in_atomic_block)

    events.emit("mail.welcome", "u1", {})
    transport.join()
    message = transport.published[-1]
    transport.send_raw(message.body, message.routing_key)
    transport.join()
    assert seen == [False]


def test_malformed_event_is_dead_lettered(transport: MemoryTransport, calls: list[Any]) -> None:
    _register("#", "all", calls)
    transport.send_raw(b'{"dj_cqrs_event": 1, "id": "x", "name": "a.b"}', "dj_cqrs.event.a.b")
    transport.join()
    [(_, outcome)] = transport.dead_letters
    assert outcome.reason == Reason.BAD_EVENT
    assert calls == []


def test_expired_event_is_dead_lettered(transport: MemoryTransport, calls: list[Any]) -> None:
    _register("#", "all", calls)
    events.emit("a.b", 1, {})
    message = transport.published[-1]
    body = json.loads(message.body)
    body["expires"] = "2000-01-01T00:00:00+00:00"
    transport.messages = []
    transport.send_raw(encoding.dumps_bytes(body), message.routing_key)
    transport.join()
    [(_, outcome)] = transport.dead_letters
    assert outcome.reason == Reason.EXPIRED


def test_model_and_domain_events_in_one_batch(transport: MemoryTransport, calls: list[Any]) -> None:
    from tests.apps.replica_app.models import SimplestModelRef  # noqa: PLC0415

    _register("#", "all", calls)
    with transaction.atomic():
        SimplestModel.objects.create(id=1, name="a")
        events.emit("simplest.created", 1, {"name": "a"})
    transport.join()
    assert SimplestModelRef.objects.get(id=1).name == "a"
    assert [e.name for _, e in calls] == ["simplest.created"]


def _ending_soon(instance: SimplestModel) -> Iterator[Any]:
    yield events.event("simplest.saved", instance.pk, {"name": instance.name})
    if instance.name and instance.name.startswith("ending"):
        yield events.event("simplest.ending", instance.pk, {"name": instance.name})


@pytest.fixture
def source() -> Iterator[None]:
    events.register_source(SimplestModel, _ending_soon)
    yield
    unregister_sources(SimplestModel)


def test_sources_emit_each_key_once(transport: MemoryTransport, source: None) -> None:
    obj = SimplestModel.objects.create(id=1, name="a")
    obj.name = "ending soon"
    obj.save()
    obj.save()
    assert [(e.name, e.key) for e in transport.events] == [("simplest.saved", "1"), ("simplest.ending", "1")]
    with pytest.raises(RuntimeError), transaction.atomic():
        SimplestModel.objects.create(id=2, name="ending")
        raise RuntimeError("rollback")
    assert not SourceEmission.objects.filter(key="2").exists()


def test_event_sources_command_runs_every_instance_once(transport: MemoryTransport) -> None:
    SimplestModel.objects.create(id=1, name="ending 1")
    SimplestModel.objects.create(id=2, name="plain")
    SimplestModel.objects.create(id=3, name="ending 3")
    events.register_source(SimplestModel, _ending_soon)
    try:
        out = io.StringIO()
        call_command("cqrs_event_sources", "--batch", "2", stdout=out, stderr=io.StringIO())
        assert "3 instance(s), 5 event(s) emitted, 0 emitted before" in out.getvalue()
        out = io.StringIO()
        call_command("cqrs_event_sources", "--model", "master_app.SimplestModel", stdout=out, stderr=io.StringIO())
        assert "3 instance(s), 0 event(s) emitted, 5 emitted before" in out.getvalue()
    finally:
        unregister_sources(SimplestModel)
    assert sorted((e.name, e.key) for e in transport.events) == [
        ("simplest.ending", "1"),
        ("simplest.ending", "3"),
        ("simplest.saved", "1"),
        ("simplest.saved", "2"),
        ("simplest.saved", "3"),
    ]


def test_ordered_handler_holds_newer_events_while_an_older_one_is_retried(
    transport: MemoryTransport, calls: list[Any]
) -> None:
    failures = [RuntimeError("first attempt fails")]
    order: list[tuple[int, int]] = []

    @events.handler("order.*", name="ordered-retry", ordered=True)
    def ordered(event: EventPayload) -> None:
        if event.seq == 1 and failures:
            raise failures.pop()
        order.append((event.seq, event.retries))

    events.emit("order.created", 3, {})
    events.emit("order.paid", 3, {})
    transport.join()
    assert order == [(1, 1), (2, 1)]  # seq 2 waited for the retry of seq 1 instead of overtaking it
    reasons = [o.reason for o in transport.outcomes if o.action is Action.RETRY]
    assert reasons == [Reason.EXCEPTION, Reason.WAITING_FOR_OLDER]


def test_ordered_handler_stops_waiting_once_the_older_event_is_dead_lettered(
    transport: MemoryTransport, calls: list[Any]
) -> None:
    order: list[int] = []

    @events.handler("order.*", name="ordered-dead", ordered=True)
    def ordered(event: EventPayload) -> None:
        if event.seq == 1:
            raise ValueError("never")
        order.append(event.seq)

    with override_settings(CQRS=cqrs_with(master={"outbox_publish": "sync"}, replica={"CQRS_MAX_RETRIES": 1})):
        events.emit("order.created", 4, {})
        events.emit("order.paid", 4, {})
        transport.join()
    assert order == [2]
    assert [o.reason for _, o in transport.dead_letters] == [Reason.MAX_RETRIES]


def test_ordered_handlers_must_be_atomic() -> None:
    with pytest.raises(ValueError, match="ordered=True needs atomic=True"):
        events.handler("a.b", name="x", ordered=True, atomic=False)
