"""The batched apply gives what applying the messages one by one gives (property-based).

The same random stream (creates, updates, deletes, duplicates, stale revisions, syncs broadcast
and direct, equal revisions with later ``cqrs_updated``, messages that cannot apply, out-of-order
delivery) goes once through the per-message path (``handle``) and once through ``handle_batch``
in random chunks; the replica tables, the tombstones and every message's outcome must be equal.
Runs on SQLite and, in the PostgreSQL unit pass (``make test``), on PostgreSQL.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dj_cqrs import encoding
from dj_cqrs.conf import cqrs_settings
from dj_cqrs.core.messages import InboundMessage
from dj_cqrs.models import Tombstone
from dj_cqrs.replica.batch import handle_batch
from dj_cqrs.replica.consumer import handle
from tests.apps.replica_app.models import MappedBatchRef, NoteRef, SimplestModelRef, UUIDPkModelRef

pytestmark = pytest.mark.django_db(transaction=True)

BASE = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
UUIDS = ["00000000-0000-0000-0000-00000000000a", "00000000-0000-0000-0000-00000000000b"]


def _updated(step: int) -> str:
    return (BASE + datetime.timedelta(seconds=step)).isoformat()


@st.composite
def messages(draw: Any) -> dict[str, Any]:
    cqrs_id = draw(st.sampled_from(["simplest", "mapped_batch", "uuid_pk"]))
    signal = draw(st.sampled_from(["SAVE", "SAVE", "SAVE", "SYNC", "DELETE"]))
    revision = draw(st.integers(0, 4))
    updated = _updated(draw(st.sampled_from([0, 1, 3, 10])))
    if cqrs_id == "uuid_pk":
        pk: Any = draw(st.sampled_from(UUIDS))
        data: dict[str, Any] = {"uid": pk, "name": draw(st.sampled_from(["u", "v"]))}
    elif cqrs_id == "mapped_batch":
        pk = draw(st.integers(1, 2))
        data = {"id": pk, "title": draw(st.sampled_from(["t1", "t2", None]))}
    else:
        pk = draw(st.integers(1, 2))
        data = {"id": pk}
        if draw(st.booleans()):  # sometimes absent: a create takes the default, an update keeps it
            data["name"] = draw(st.sampled_from(["a", "b", "c"]))
    data.update(cqrs_revision=revision, cqrs_updated=updated)
    if signal == "DELETE":
        data = {"id": pk, "cqrs_revision": revision, "cqrs_updated": updated}
    broken = draw(st.sampled_from([None] * 12 + ["no_revision", "no_pk"]))
    if broken == "no_revision":
        data.pop("cqrs_revision")
    elif broken == "no_pk":
        data.pop("id", None)
        data.pop("uid", None)
    queue = draw(st.sampled_from([None, cqrs_settings.queue])) if signal == "SYNC" else None
    return {
        "signal_type": signal,
        "cqrs_id": cqrs_id,
        "instance_data": data,
        "instance_pk": pk,
        "previous_data": None,
        "correlation_id": None,
        "expires": None,
        "retries": 0,
        "queue": queue,
    }


def _inbound(body: dict[str, Any]) -> InboundMessage:
    queue = body.pop("queue")
    routing_key = f"cqrs.{queue}.{body['cqrs_id']}" if queue else body["cqrs_id"]
    return InboundMessage(encoding.dumps_bytes(body), routing_key=routing_key)


def _reset() -> None:
    NoteRef.objects.all().delete()
    for model in (SimplestModelRef, MappedBatchRef, UUIDPkModelRef, Tombstone):
        model.objects.all().delete()


def _snapshot() -> dict[str, Any]:
    return {
        "simplest": sorted(SimplestModelRef.objects.values_list("id", "name", "cqrs_revision", "cqrs_updated")),
        "mapped": sorted(MappedBatchRef.objects.values_list("ext_id", "label", "extra", "cqrs_revision", "cqrs_updated")),
        "uuid": sorted(UUIDPkModelRef.objects.values_list("uid", "name", "cqrs_revision", "cqrs_updated")),
        "notes": sorted(NoteRef.objects.values_list("parent_id", flat=True)),
        "tombstones": sorted(Tombstone.objects.values_list("cqrs_id", "object_pk", "revision", "deleted_at")),
    }


def _outcome(outcome: Any) -> tuple[str, str, str]:
    return (outcome.action.value, outcome.status, outcome.reason)


def _seed(rows: list[tuple[int, int]]) -> None:
    """The same starting state for both paths (stored rows, one with a cascading note)."""
    for pk, revision in rows:
        handle(_inbound({
            "signal_type": "SAVE", "cqrs_id": "mapped_batch", "instance_pk": pk, "previous_data": None,
            "correlation_id": None, "expires": None, "retries": 0, "queue": None,
            "instance_data": {"id": pk, "title": "seed", "cqrs_revision": revision, "cqrs_updated": _updated(2)},
        }))
        NoteRef.objects.create(parent_id=pk)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    stream=st.lists(messages(), min_size=1, max_size=30),
    cuts=st.lists(st.integers(1, 12), min_size=1, max_size=10),
    seed=st.lists(st.tuples(st.integers(1, 2), st.integers(0, 2)), max_size=2, unique_by=lambda r: r[0]),
)
def test_batched_apply_equals_per_message_apply(stream, cuts, seed):
    _reset()
    _seed(seed)
    one_by_one = [_outcome(handle(_inbound(dict(body)))) for body in stream]
    expected = _snapshot()

    _reset()
    _seed(seed)
    batched: list[tuple[str, str, str]] = []
    start, turn = 0, 0
    while start < len(stream):
        size = cuts[turn % len(cuts)]
        chunk = [_inbound(dict(body)) for body in stream[start : start + size]]
        batched.extend(_outcome(o) for o in handle_batch(chunk))
        start, turn = start + size, turn + 1

    assert batched == one_by_one
    assert _snapshot() == expected


def _save(cqrs_id: str, data: dict[str, Any]) -> InboundMessage:
    return _inbound({
        "signal_type": "SAVE", "cqrs_id": cqrs_id, "instance_pk": None, "previous_data": None,
        "correlation_id": None, "expires": None, "retries": 0, "queue": None,
        "instance_data": {**data, "cqrs_revision": 0, "cqrs_updated": _updated(0)},
    })


def test_a_batch_with_a_bad_key_applies_the_good_messages_and_retries_only_the_bad_one():
    _reset()
    batch = [_save("uuid_pk", {"uid": u, "name": "n"}) for u in (UUIDS[0], "not-a-uuid", UUIDS[1])]

    outcomes = handle_batch(batch)

    assert [(o.action.value, o.reason) for o in outcomes] == [("ack", ""), ("retry", "exception"), ("ack", "")]
    assert sorted(str(u) for u in UUIDPkModelRef.objects.values_list("uid", flat=True)) == UUIDS


def test_a_row_the_database_rejects_fails_alone():
    from django.db import connection

    if connection.vendor == "sqlite":
        pytest.skip("SQLite does not enforce varchar lengths")
    _reset()
    batch = [_save("mapped_batch", {"id": pk, "title": title}) for pk, title in [(1, "ok"), (2, "x" * 31), (3, "ok")]]

    outcomes = handle_batch(batch)

    assert [o.action.value for o in outcomes] == ["ack", "retry", "ack"]
    assert sorted(MappedBatchRef.objects.values_list("ext_id", flat=True)) == [1, 3]


def test_models_with_hooks_keep_the_per_message_path():
    from dj_cqrs.replica.batch import batch_reason
    from tests.apps.replica_app.models import CustomDeleteRef, MappedModelRef

    assert batch_reason(MappedBatchRef) is None
    assert batch_reason(SimplestModelRef) is None
    assert batch_reason(MappedModelRef) == "cqrs_update is overridden"
    assert batch_reason(CustomDeleteRef) is not None
