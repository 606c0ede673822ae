"""Diff pipelines, cqrs_sync, keyset pagination and the admin action (memory transport)."""

from __future__ import annotations

import io
import json
import uuid

import pytest
from django.contrib.admin.sites import site
from django.db import OperationalError, connection
from django.test import RequestFactory
from django.utils import timezone

from dj_cqrs.exceptions import PublishFailed
from dj_cqrs.sync import diff, keyset, pipeline, resync
from tests.apps.master_app.models import (
    Author,
    BasicFieldsModel,
    FilteredModel,
    Publisher,
    SimplestModel,
    TrackedModel,
    UUIDPkModel,
)
from tests.apps.replica_app.models import SimplestModelRef, UUIDPkModelRef
from tests.unit.sync.helpers import run

pytestmark = pytest.mark.django_db(transaction=True, reset_sequences=True)


def pipe_drift(cqrs_id: str, transport, batch: str = "3") -> tuple:
    master = run("cqrs_diff_master", "--cqrs-id", cqrs_id, "--batch", batch)
    assert master.code == 0, master.err
    replica = run("cqrs_diff_replica", stdin=master.out)
    assert replica.code == 0, replica.err
    synced = run("cqrs_diff_sync", "-b", batch, stdin=replica.out)
    assert synced.code == 0, synced.err
    transport.join(fail_fast=True)
    return master, replica, synced


def pipe_deleted(cqrs_id: str, batch: str = "3") -> tuple:
    replica = run("cqrs_deleted_diff_replica", "-cid", cqrs_id, "-b", batch)
    master = run("cqrs_deleted_diff_master", stdin=replica.out)
    deleted = run("cqrs_deleted_sync_replica", stdin=master.out)
    assert (replica.code, master.code, deleted.code) == (0, 0, 0), (replica.err, master.err, deleted.err)
    return replica, master, deleted


def names(model) -> dict:
    return dict(model._base_manager.values_list("pk", "name"))


def test_revisions_differ_is_pure():
    assert diff.revisions_differ({1: 0, 2: 3, 3: 1}, {1: 0, 2: 2}) == [2, 3]
    assert diff.revisions_differ({}, {1: 0}) == []


def test_drift_and_deletions_repaired_end_to_end(transport):
    for i in range(1, 11):
        SimplestModel.objects.create(name=f"row {i}")
    transport.join(fail_fast=True)
    SimplestModelRef.objects.filter(pk=2).update(name="drift", cqrs_revision=40)  # changed behind its back
    SimplestModelRef.objects.filter(pk__in=[3, 7]).delete()  # lost rows
    SimplestModelRef.objects.create(id=99, name="ghost", cqrs_revision=0, cqrs_updated=timezone.now())
    SimplestModel.objects.filter(pk=5).update(name="changed on master without an event", cqrs_revision=1)

    master, replica, synced = pipe_drift("simplest", transport)
    header = master.out.splitlines()[0]
    assert header.startswith("simplest,") and len(master.out.splitlines()) == 1 + 4  # 10 rows / 3
    assert replica.out.splitlines()[0] == f"{header},replica"
    assert sorted(k for line in replica.out.splitlines()[1:] for k in json.loads(line)) == [2, 3, 5, 7]
    assert "PK to resync" in replica.err
    assert "4 instance(s) synced." in synced.out
    assert [p.signal_type.value for p in transport.payloads[-4:]] == ["SYNC"] * 4
    assert all(m.routing_key == "cqrs.replica.simplest" for m in transport.published[-4:])

    replica_side, master_side, deleted = pipe_deleted("simplest")
    assert master_side.out.splitlines()[1:] == ["[99]"]
    assert "1 instance(s) deleted." in deleted.err
    assert names(SimplestModelRef) == names(SimplestModel)


def test_diff_replica_lists_keys_as_the_set_django_cqrs_printed(transport):
    for i in range(1, 11):
        SimplestModel.objects.create(name=f"row {i}")
    transport.join(fail_fast=True)
    SimplestModelRef.objects.filter(pk__in=[2, 9]).delete()
    stream = "simplest,2024-01-01 00:00:00+00:00\n" + json.dumps([[9, 0], [2, 0], [3, 0]]) + "\n"
    replica = run("cqrs_diff_replica", stdin=stream)
    assert replica.code == 0, replica.err
    assert replica.err.strip() == "PK to resync: {9, 2}"  # a set's repr, in the set's order
    assert replica.out.splitlines()[1:] == ["[9,2]"]


def test_uuid_primary_key_not_named_id(transport):
    objs = [UUIDPkModel.objects.create(name=f"ü {i}") for i in range(6)]
    transport.join(fail_fast=True)
    UUIDPkModelRef.objects.filter(pk=objs[0].pk).update(name="drift", cqrs_revision=3)
    UUIDPkModelRef.objects.filter(pk=objs[1].pk).delete()
    ghost = uuid.uuid4()
    UUIDPkModelRef.objects.create(uid=ghost, name="ghost", cqrs_revision=0, cqrs_updated=timezone.now())
    master, replica, _ = pipe_drift("uuid_pk", transport, batch="2")
    assert json.loads(master.out.splitlines()[1])[0][0] == str(sorted(o.pk for o in objs)[0])
    assert sorted(k for line in replica.out.splitlines()[1:] for k in json.loads(line)) == sorted(
        [str(objs[0].pk), str(objs[1].pk)]
    )
    _, master_side, _ = pipe_deleted("uuid_pk", batch="2")
    assert json.loads(master_side.out.splitlines()[1]) == [str(ghost)]
    assert names(UUIDPkModelRef) == names(UUIDPkModel)


def test_diff_master_filter_and_is_sync_instance(transport):
    for name in ("a", "skip", "b"):
        FilteredModel.objects.create(name=name)
    out = run("cqrs_diff_master", "-cid", "filtered")
    pairs = json.loads(out.out.splitlines()[1])
    assert [p[0] for p in pairs] == [1, 3]  # "skip" is not a sync instance
    out = run("cqrs_diff_master", "-cid", "filtered", "-f", '{"name": "b"}')
    assert [p[0] for p in json.loads(out.out.splitlines()[1])] == [3]
    assert run("cqrs_diff_master", "-cid", "filtered", "-f", "[1]").error.startswith("Bad filter kwargs!")
    assert run("cqrs_diff_master", "-cid", "filtered", "-f", '{"nope": 1}').error.startswith("Bad filter kwargs!")
    assert run("cqrs_diff_master", "-cid", "nope").error == "Wrong CQRS ID: nope!"


def test_nothing_to_diff_writes_nothing_and_says_so_on_stderr(transport):
    """As django-cqrs: no header, ``No objects found for filter!`` on stderr, exit status 0."""
    for args in (("cqrs_diff_master", "-cid", "simplest"), ("cqrs_deleted_diff_replica", "-cid", "simplest")):
        out = run(*args)
        assert (out.out, out.err.strip(), out.code) == ("", "No objects found for filter!", 0)
    SimplestModel.objects.create(name="x")
    transport.join(fail_fast=True)
    for args in (("cqrs_diff_master", "-cid", "simplest"), ("cqrs_deleted_diff_replica", "-cid", "simplest")):
        out = run(*args, "--filter", '{"name": "nothing"}')
        assert (out.out, out.err.strip(), out.code) == ("", "No objects found for filter!", 0)
        assert run(*args, "--filter", '{"name": "x"}').out.startswith("simplest,")


def test_bad_stream_lines_are_reported_with_line_numbers(transport):
    SimplestModel.objects.create(name="x")
    text = "simplest,2026-01-01 00:00:00+00:00\n[[1,5]]\nnot json\n\n{\"a\": 1}\n[[\"abc\", 1]]\n[3]\n[[1,0]]\n"
    result = run("cqrs_diff_replica", stdin=text)
    assert result.code == 3
    assert "line 3: not valid JSON" in result.err
    assert "line 5: invalid primary key 'a'" in result.err
    assert "line 6: invalid primary key 'abc'" in result.err
    assert "line 7: expected [pk, revision], got 3" in result.err
    assert result.out.splitlines()[1:] == ["[1]", "[1]"]

    synced = run("cqrs_diff_sync", stdin="simplest,t,None\n[1]\nnot json\n[\"zz\"]\n")
    assert synced.code == 3 and "line 3" in synced.err and "line 4" in synced.err
    assert "1 instance(s) synced." in synced.out
    assert transport.published[-1].routing_key == "simplest"  # "None": broadcast

    assert run("cqrs_diff_replica", stdin="").error == "Input stream is empty!"
    assert run("cqrs_diff_replica", stdin="[[2,0]]\n").error == "Wrong CQRS ID: [[2!"
    assert run("cqrs_deleted_diff_master", stdin="nope,x\n").error == "Wrong CQRS ID: nope!"
    deleted = run("cqrs_deleted_sync_replica", stdin="simplest,x\n[1]\n[\"bad\"]\n")
    assert deleted.code == 3 and "line 3: invalid primary key" in deleted.err


def test_diff_sync_reports_keys_gone_from_master(transport):
    SimplestModel.objects.create(name="x")
    result = run("cqrs_diff_sync", stdin="simplest,t,replica\n[1, 500]\n")
    assert result.code == 0
    assert "1 key(s) no longer exist on the master" in result.out


def test_diff_replica_reads_a_batch_in_one_query(transport, django_assert_num_queries):
    for i in range(20):
        SimplestModel.objects.create(name=str(i))
    transport.join(fail_fast=True)
    line = json.dumps([[i, 0] for i in range(1, 21)])
    out = io.StringIO()
    with django_assert_num_queries(1):
        pipeline.diff_replica(io.StringIO(f"simplest,t\n{line}\n"), out, queue="q")


# -- cqrs_sync --------------------------------------------------------------------------------------


def test_cqrs_sync_filters_queue_and_batches(transport, django_assert_num_queries):
    for i in range(7):
        SimplestModel.objects.create(name=f"n{i}")
    transport.reset()
    assert "No objects found for filter!" in run("cqrs_sync", "-cid", "simplest").out
    assert transport.published == []
    result = run("cqrs_sync", "-cid", "simplest", "-f", "{}", "-b", "3")
    assert result.code == 0 and "7 instance(s) synced." in result.out
    assert [p.instance_pk for p in transport.payloads] == list(range(1, 8))
    assert {p.signal_type.value for p in transport.payloads} == {"SYNC"}
    transport.reset()
    result = run("cqrs_sync", "-cid", "simplest", "-f", '{"id__in": [2, 3]}', "-q", "other")
    assert [m.routing_key for m in transport.published] == ["cqrs.other.simplest"] * 2
    assert run("cqrs_sync", "-cid", "simplest", "-f", '{"id": 999}').out.startswith("No objects found")
    assert run("cqrs_sync", "-cid", "simplest", "-f", "xx").error == "Bad filter kwargs!"
    with django_assert_num_queries(3):  # 7 rows, batches of 3: one query each, no per-row refresh
        resync.sync_queryset(SimplestModel, SimplestModel.objects.all(), batch_size=3)


def test_cqrs_sync_body_equals_model_cqrs_sync(transport):
    obj = TrackedModel.objects.create(status="x")
    transport.reset()
    obj.cqrs_sync()
    manual = transport.payloads[0].to_dict()
    transport.reset()
    resync.sync_queryset(TrackedModel, TrackedModel.objects.all())
    batched = transport.payloads[0].to_dict()
    for body in (manual, batched):
        body.pop("expires")
    assert batched == manual


def test_cqrs_sync_with_serializer_and_filtered_rows(transport):
    publisher = Publisher.objects.create(name="p")
    Author.objects.create(id=1, name="a", publisher=publisher)
    FilteredModel.objects.create(name="skip")
    FilteredModel.objects.create(name="ok")
    transport.reset()
    assert run("cqrs_sync", "-cid", "author", "-f", "{}").code == 0
    assert transport.payloads[0].instance_data["publisher"] == {"id": publisher.pk, "name": "p"}
    result = run("cqrs_sync", "-cid", "filtered", "-f", "{}")
    assert "1 instance(s) synced." in result.out and "1 instance(s) not sent" in result.out


def test_cqrs_sync_row_error_is_reported_and_counted(transport, monkeypatch):
    for i in range(3):
        SimplestModel.objects.create(name=f"n{i}")
    transport.reset()
    original = SimplestModel.get_cqrs_meta

    def broken(self, **kwargs):
        if self.pk == 2:
            raise RuntimeError("meta exploded")
        return original(self, **kwargs)

    monkeypatch.setattr(SimplestModel, "get_cqrs_meta", broken)
    result = run("cqrs_sync", "-cid", "simplest", "-f", "{}")
    assert result.code == 3
    assert "pk=2: RuntimeError: meta exploded" in result.err
    assert "2 instance(s) synced." in result.out
    assert [p.instance_pk for p in transport.payloads] == [1, 3]


def test_cqrs_sync_publish_failure_exits_non_zero(transport):
    SimplestModel.objects.create(name="x")
    transport.fail_with = ConnectionError("broker down")
    result = run("cqrs_sync", "-cid", "simplest", "-f", "{}")
    assert result.code == 1 and "publishing stopped after 0 row(s)" in result.error
    with pytest.raises(PublishFailed):
        resync.sync_pks(SimplestModel, [1])


# -- keyset pagination ------------------------------------------------------------------------------


def test_keyset_neither_skips_nor_duplicates_while_rows_change(transport):
    for i in range(1, 21):
        BasicFieldsModel.objects.create(int_field=i * 10)
    seen = []
    for n, batch in enumerate(keyset.pk_batches(BasicFieldsModel.objects.all(), 4)):
        seen.extend(o.pk for o in batch)
        if n == 1:
            # rows before the cursor vanish and appear; the rest must still come exactly once
            BasicFieldsModel.objects.filter(int_field__in=[10, 20]).delete()
            BasicFieldsModel.objects.create(int_field=5)
            BasicFieldsModel.objects.create(int_field=1000)
    assert seen == sorted(set(seen))
    assert seen == [i * 10 for i in range(1, 21)] + [1000]


def test_keyset_string_keys_and_values_list():
    SimplestModelRef.objects.bulk_create(
        [SimplestModelRef(id=i, name=f"n{i}", cqrs_revision=0, cqrs_updated=timezone.now()) for i in range(1, 8)]
    )
    batches = list(keyset.pk_batches(SimplestModelRef.objects.values_list("pk", "name"), 3))
    assert [len(b) for b in batches] == [3, 3, 1]
    with pytest.raises(ValueError):
        list(keyset.pk_batches(SimplestModelRef.objects.all(), 0))


def test_keyset_retries_a_lost_connection(caplog):
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return ["ok"]

    with caplog.at_level("INFO", logger="django-cqrs.sync"):
        assert keyset.fetch_with_reconnect(flaky, "default") == ["ok"]
    assert len(calls) == 2
    assert [r.levelname for r in caplog.records if r.name == "django-cqrs.sync"] == ["WARNING", "INFO"]
    with pytest.raises(OperationalError):
        keyset.fetch_with_reconnect(lambda: (_ for _ in ()).throw(OperationalError("syntax")), "default")


# -- admin ------------------------------------------------------------------------------------------


def test_admin_action_uses_the_batched_sync(transport, django_assert_max_num_queries):
    from django.contrib.messages.storage.fallback import FallbackStorage

    for i in range(5):
        SimplestModel.objects.create(name=f"n{i}")
    transport.reset()
    admin = site._registry[SimplestModel]
    request = RequestFactory().post("/")
    request.session = {}
    request._messages = FallbackStorage(request)
    with django_assert_max_num_queries(2):
        admin.sync_items(request, SimplestModel.objects.filter(pk__in=[1, 2, 3]))
    assert [p.instance_pk for p in transport.payloads] == [1, 2, 3]
    assert [str(m) for m in request._messages] == ["3 successfully synced. 0 failed: []"]
    transport.fail_with = ConnectionError("down")
    request._messages = FallbackStorage(request)
    admin.sync_items(request, SimplestModel.objects.filter(pk__in=[4]))
    assert [str(m) for m in request._messages] == ["0 successfully synced. 1 failed: [<SimplestModel: SimplestModel object (4)>]"]


def test_vendor():
    assert connection.vendor in ("sqlite", "postgresql")
