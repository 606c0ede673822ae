"""The same master scenario run on our dj_cqrs and on django-cqrs 3.1.0: the messages both publish
must be the same, message by message (routing key, AMQP properties, body keys and values), up to
the differences listed here, each of which a django-cqrs consumer accepts (see test_mixed_fleet):

* JSON text: django-cqrs escapes non-ASCII (``\\uXXXX``) and ``/`` (``\\/``), we send UTF-8;
* key order inside ``instance_data``: django-cqrs writes ``cqrs_revision``/``cqrs_updated`` first;
* Decimal: django-cqrs writes it through a float, we write its exact digits (same number here);
* ``previous_data`` of a SYNC for a model with tracked fields: django-cqrs sends whatever its
  Python object kept from its last save (``null`` for a freshly loaded object), we send ``{}``;
* an aware datetime field on SAVE: django-cqrs writes the in-memory value with the offset it
  was given (``+05:30``), we write the committed row as read back (UTC): the same instant;
* timestamps (``cqrs_updated``, ``expires``) differ in value, not in format.
"""

from __future__ import annotations

import contextlib
import datetime
import decimal
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from integration_tests.compat.wire import Observer, Seen
from integration_tests.harness import Service, pg_database, rabbit_cleanup, unique

pytestmark = pytest.mark.compat

UPDATED = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{6})?\+00:00$")  # str(aware datetime)
DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{6})?[+-]\d{2}:\d{2}$")
EXPIRES = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+00:00$")  # ISO-8601, seconds, offset
TAG = "0b0c3f5e-1d4a-4f57-9a52-1f0b3c6b8a10"

STEPS: list[dict[str, Any]] = [
    {"op": "create", "id": 1, "fields": {
        "name": "Kaffee ☕ 1/2", "description": 'a/b "q" \\ \n', "price": "12345.678901",
        "created_at": "2026-11-22T08:27:56.123456+05:30", "release_date": "2024-01-02",
        "external_id": "00000000-0000-0000-0000-000000000005", "active": True, "category": 3,
    }},
    {"op": "create", "id": 2, "fields": {"name": "emoji 🎉", "price": None, "created_at": "2026-01-01T00:00:00+00:00"}},
    {"op": "update", "id": 1, "fields": {"price": "-1.5", "category": None}},
    {"op": "update", "id": 2, "fields": {"active": False, "category": 4}},
    {"op": "sync", "id": 1},
    {"op": "sync", "id": 1, "queue": "some_replica"},
    {"op": "create", "model": "tag", "id": TAG, "fields": {"label": "uuid pk"}},
    {"op": "update", "model": "tag", "id": TAG, "fields": {"label": "uuid pk ✓"}},
    {"op": "sync", "model": "tag", "id": TAG, "queue": "some_replica"},
    {"op": "create", "model": "note", "id": 7, "fields": {"text": "note"}},
    {"op": "bulk_create", "items": [{"id": 100, "fields": {"name": "bulk", "price": "2.5"}}]},
    {"op": "bulk_update", "ids": [100], "fields": {"name": "bulk 2"}},
    {"op": "delete", "id": 1},
    {"op": "delete", "model": "note", "id": 7},
]


@contextlib.contextmanager
def published_by(python: str) -> Iterator[list[Seen]]:
    """Run STEPS on a master service with ``python``; yield every message it published."""
    run = unique("it")
    exchange = f"cqrs_{run}"
    prefix = f"replica_{run}"
    try:
        with pg_database(f"{run}_master") as db:
            master = Service("master", python, {"IT_CQRS_EXCHANGE": exchange, "IT_CQRS_QUEUE": prefix, "IT_DB_NAME": db})
            master.migrate()
            observer = Observer(exchange, prefix)
            master.scenario(STEPS)
            yield observer.take(len(STEPS))
    finally:
        rabbit_cleanup(exchange, [prefix])


def test_our_master_publishes_what_django_cqrs_publishes(our_python, compat_python, rabbitmq, postgres):
    with published_by(our_python) as ours, published_by(compat_python) as theirs:
        pass
    assert [m.routing_key for m in ours] == [m.routing_key for m in theirs]
    assert [m.routing_key for m in ours][4:6] == ["it_product", "cqrs.some_replica.it_product"]
    for index, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        where = f"message {index} ({a.routing_key})"
        body_a, body_b = _decode(a.raw), _decode(b.raw)
        assert b.properties == {"content_type": "text/plain", "delivery_mode": 2, "headers": {}, "expiration": None}
        # dj_cqrs adds one header, the key partitioned replicas hash on (docs/scaling.md).
        key = f"{body_a['cqrs_id']}:{body_a['instance_pk']}"
        assert a.properties == {**b.properties, "headers": {"x-cqrs-partition-key": key}}, where
        assert list(body_a) == list(body_b), where  # the same top-level keys in the same order
        for key in ("signal_type", "cqrs_id", "instance_pk", "correlation_id", "retries", "meta"):
            assert body_a[key] == body_b[key], f"{where}: {key}"
        assert EXPIRES.match(body_a["expires"]) and EXPIRES.match(body_b["expires"]), where
        data_a, data_b = body_a["instance_data"], body_b["instance_data"]
        assert UPDATED.match(data_a.pop("cqrs_updated")) and UPDATED.match(data_b.pop("cqrs_updated")), where
        assert _instants(data_a) == _instants(data_b), where
        if body_a["signal_type"] == "SYNC" and body_a["cqrs_id"] == "it_product":
            assert (body_a["previous_data"], body_b["previous_data"]) == ({}, None), where
        else:
            assert body_a["previous_data"] == body_b["previous_data"], where
    # What the django-cqrs JSON looks like, for the record: escaped, cqrs fields first.
    assert b'"name":"Kaffee \\u2615 1\\/2"' in theirs[0].raw
    assert '"name":"Kaffee ☕ 1/2"'.encode() in ours[0].raw
    assert list(_decode(theirs[0].raw)["instance_data"])[:2] == ["cqrs_revision", "cqrs_updated"]


def _instants(data: dict[str, Any]) -> dict[str, Any]:
    """Datetime strings (``str(aware datetime)``) replaced by the instant they denote."""
    result = {}
    for key, value in data.items():
        if isinstance(value, str) and DATETIME.match(value):
            value = datetime.datetime.fromisoformat(value).astimezone(datetime.timezone.utc)
        result[key] = value
    return result


def _decode(raw: bytes) -> dict[str, Any]:
    # Numbers as Decimal: 12345.678901 (float-encoded) equals 12345.678901 (exact digits), and
    # -1.5 equals -1.500000.
    return json.loads(raw, parse_float=decimal.Decimal)  # type: ignore[no-any-return]
