"""The examples of ``docs/testing.md`` and ``docs/transports.md``, run as tests so that the
pages stay true.

In the pages, ``Product`` is the master model of the README's Quick start and of
docs/getting-started.md and ``ProductRef`` its replica model (CQRS_ID ``product``, fields ``name``
and ``price``); here they are the same classes in the test app ``tests.apps.quickstart``. ``test_every_example_of_the_pages_is_here`` checks that
each test, fixture and class shown in the pages appears in this file, character for character.
"""

from __future__ import annotations

import json
import queue
import re
import textwrap
import threading
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections, transaction
from django.test import override_settings

from dj_cqrs import encoding
from dj_cqrs.constants import SignalType
from dj_cqrs.core.handlers import default_handler
from dj_cqrs.core.messages import Action, InboundMessage
from dj_cqrs.core.settlement import failure_headers, retry_body
from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.exceptions import PublishFailed
from dj_cqrs.master.relay import Relay
from dj_cqrs.process.lifecycle import StopFlag, process_stop
from dj_cqrs.testing import use_memory_transport
from dj_cqrs.transport import get_transport, set_transport
from dj_cqrs.transport.base import BaseTransport
from dj_cqrs.transport.memory import DeadLetterError
from dj_cqrs.transport.mock import TransportMock
from tests.apps.quickstart.models import Product, ProductRef

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = [DOCS / "testing.md", DOCS / "transports.md"]


@pytest.fixture
def cqrs_transport():
    with use_memory_transport() as transport:
        yield transport


@pytest.mark.django_db(transaction=True)
def test_product_reaches_the_replica():
    with use_memory_transport() as transport:
        product = Product.objects.create(name="chair", price="49.00")
        transport.join()  # applies what was published to the replica models of this project

    assert ProductRef.objects.get(pk=product.pk).name == "chair"


@pytest.mark.django_db(transaction=True)
def test_one_event_per_object_per_transaction(cqrs_transport):
    with transaction.atomic():
        product = Product.objects.create(name="chair", price="49.00")
        product.name = "table"
        product.save()

    (payload,) = cqrs_transport.payloads  # decoded from the bytes that were published
    assert payload.signal_type == SignalType.SAVE
    assert payload.instance_data["name"] == "table"  # the state at commit
    assert payload.instance_data["cqrs_revision"] == 0
    assert cqrs_transport.published[0].routing_key == Product.CQRS_ID


@pytest.mark.django_db(transaction=True)
def test_a_late_duplicate_is_ignored(cqrs_transport):
    product = Product.objects.create(name="v1", price="49.00")
    product.name = "v2"
    product.save()
    cqrs_transport.join()

    first = cqrs_transport.published[0]
    cqrs_transport.send_raw(first.body, first.routing_key)  # the broker delivers it again, late
    cqrs_transport.join()

    assert ProductRef.objects.get(pk=product.pk).name == "v2"
    assert cqrs_transport.outcomes[-1].status == "ignored_stale"


@pytest.mark.django_db(transaction=True)
def test_a_message_from_another_service(cqrs_transport):
    body = {
        "signal_type": "SAVE",
        "cqrs_id": ProductRef.CQRS_ID,
        "instance_data": {
            "id": 7,
            "name": "lamp",
            "price": "19.90",
            "cqrs_revision": 3,
            "cqrs_updated": "2024-05-01 10:00:00.123456+00:00",
        },
        "instance_pk": 7,
    }
    cqrs_transport.send_raw(json.dumps(body).encode(), routing_key=ProductRef.CQRS_ID)
    assert cqrs_transport.join() == 1

    assert ProductRef.objects.get(pk=7).cqrs_revision == 3


@pytest.mark.django_db(transaction=True)
def test_malformed_input_is_dead_lettered(cqrs_transport):
    cqrs_transport.send_raw(b"not json", routing_key=ProductRef.CQRS_ID)
    cqrs_transport.join()

    ((message, outcome),) = cqrs_transport.dead_letters
    assert message.body == b"not json"
    assert outcome.reason == "invalid_json"


@pytest.mark.django_db(transaction=True)
def test_fail_fast(cqrs_transport):
    cqrs_transport.send_raw(b'{"signal_type": "SAVE"}', routing_key=ProductRef.CQRS_ID)

    with pytest.raises(DeadLetterError, match="missing_keys"):
        cqrs_transport.join(fail_fast=True)


@pytest.mark.django_db(transaction=True)
def test_events_survive_a_broker_outage(cqrs_transport):
    cqrs_transport.fail_with = ConnectionError("broker down")
    Product.objects.create(name="chair", price="49.00")  # committed; its event waits in the outbox
    assert cqrs_transport.published == []

    cqrs_transport.fail_with = None
    Relay(min_age=0).run_once()  # what `manage.py cqrs_relay --once --min-age 0` does
    cqrs_transport.join()

    assert ProductRef.objects.get().name == "chair"


@pytest.mark.django_db
def test_without_transaction_true(cqrs_transport, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        Product.objects.create(name="chair", price="49.00")

    assert len(cqrs_transport.payloads) == 1


@pytest.mark.django_db(transaction=True)
def test_with_transport_mock():
    cqrs = {**settings.CQRS, "transport": "dj_cqrs.transport.mock.TransportMock"}
    with override_settings(CQRS=cqrs):
        assert isinstance(get_transport(), TransportMock)
        Product.objects.create(name="chair", price="49.00")  # published nowhere, and nothing fails

    assert ProductRef.objects.count() == 0


# -- docs/transports.md: writing a transport -------------------------------------------------------


class QueueTransport(BaseTransport):
    """Publishes into a queue.Queue and consumes from it (one process)."""

    background_publish = False

    def __init__(self):
        self.queue = queue.Queue(maxsize=10_000)
        self.dead = []

    def produce(self, payload):
        key = f"cqrs.{payload.queue}.{payload.cqrs_id}" if payload.queue else payload.cqrs_id
        try:
            self.queue.put_nowait(InboundMessage(encoding.dumps_bytes(payload.to_dict()), key))
        except queue.Full as exc:
            raise PublishFailed("the queue is full") from exc

    def consume(self, cqrs_ids=None, handler=None, stop=None, **kwargs):
        handler = handler or default_handler()
        stop = stop or process_stop
        while not stop.is_set():
            try:
                message = self.queue.get(timeout=0.2)
            except queue.Empty:
                continue
            (outcome,) = handler([message], stop.wait)
            if outcome.action is Action.RETRY:
                stop.wait(outcome.delay)
                self.queue.put(InboundMessage(retry_body(outcome.payload), message.routing_key))
            elif outcome.action is Action.DEAD_LETTER:
                self.dead.append((message, failure_headers(message, outcome)))
            elif outcome.action is Action.REQUEUE:
                stop.wait(1)
                self.queue.put(message)


@pytest.mark.django_db(transaction=True)
def test_the_queue_transport_of_the_transports_page():
    transport = QueueTransport()
    set_transport(transport)
    stop = StopFlag()

    def worker_main():
        try:
            transport.consume(stop=stop)
        finally:
            connections.close_all()

    worker = threading.Thread(target=worker_main)
    try:
        product = Product.objects.create(name="chair", price="49.00")
        Product.objects.create(name="table", price="49.00").delete()
        transport.queue.put(InboundMessage(b"not json", Product.CQRS_ID))
        worker.start()
        for _ in range(100):  # at most 10 s; the malformed message is the last one
            if transport.dead:
                break
            stop.wait(0.1)
    finally:
        stop.set()
        worker.join(5)
        set_transport(None)

    assert not worker.is_alive()
    assert list(ProductRef.objects.values_list("pk", "name")) == [(product.pk, "chair")]
    ((message, headers),) = transport.dead
    assert message.body == b"not json" and headers["x-cqrs-reason"] == "invalid_json"


def test_the_queue_transport_raises_when_it_cannot_publish():
    transport = QueueTransport()
    transport.queue = queue.Queue(maxsize=1)
    payload = TransportPayload("SAVE", Product.CQRS_ID, {"id": 1, "name": "chair"}, 1)

    transport.produce(payload)
    with pytest.raises(PublishFailed, match="full"):
        transport.produce(payload)


# -- the pages and this file agree ----------------------------------------------------------------

_BLOCK = re.compile(r"```python\n(.*?)```", re.S)
_DEFINITION = re.compile(r"^(def test_|@pytest\.|class )", re.M)


def _examples() -> list[tuple[Path, str]]:
    """The code blocks of the pages that define a test, a fixture or a class."""
    return [
        (page, block)
        for page in PAGES
        for block in _BLOCK.findall(page.read_text(encoding="utf-8"))
        if _DEFINITION.search(block)
    ]


def test_every_example_of_the_pages_is_here():
    source = Path(__file__).read_text(encoding="utf-8")
    examples = _examples()
    assert {page.name for page, _ in examples} == {page.name for page in PAGES}
    assert len(examples) >= 9
    for page, block in examples:
        # A page may show the imports a user needs; the definitions themselves must be here.
        start = _DEFINITION.search(block)
        assert start is not None
        body = textwrap.dedent(block[start.start() :]).strip()
        assert body in source, f"docs/{page.name} example not found in {__file__}:\n{body}"
