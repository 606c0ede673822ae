"""dj_cqrs.replica.bulk: set-based upsert with the revision rules, both strategies."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.models import signals
from django.utils import timezone

from dj_cqrs.replica import bulk
from tests.apps.replica_app.models import FKModelRef, SimplestModelRef, UUIDPkModelRef

pytestmark = pytest.mark.django_db(transaction=True)

STRATEGIES = ["upsert", "portable"]
UPDATED = "2026-01-01 00:00:00+00:00"


def row(pk, name, revision, **extra):
    return {"id": pk, "name": name, "cqrs_revision": revision, "cqrs_updated": UPDATED, **extra}


def state():
    return {pk: (name, rev) for pk, name, rev in SimplestModelRef.objects.values_list("pk", "name", "cqrs_revision")}


def seed():
    now = timezone.now()
    SimplestModelRef.objects.bulk_create(
        [SimplestModelRef(id=i, name=f"old {i}", cqrs_revision=5, cqrs_updated=now) for i in (1, 2, 3)]
    )


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_non_sync_keeps_newer_and_equal_revisions(strategy):
    seed()
    result = bulk.apply_master_rows(
        SimplestModelRef,
        [row(1, "older", 4), row(2, "same", 5), row(3, "newer", 6), row(4, "new", 0)],
        strategy=strategy,
    )
    assert (result.loaded, result.skipped, result.failed) == (2, 2, 0)
    assert state() == {1: ("old 1", 5), 2: ("old 2", 5), 3: ("newer", 6), 4: ("new", 0)}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_sync_overwrites_any_revision(strategy):
    seed()
    result = bulk.apply_master_rows(
        SimplestModelRef, [row(1, "older", 4), row(2, "same", 5)], sync=True, strategy=strategy
    )
    assert (result.loaded, result.skipped) == (2, 0)
    assert state() == {1: ("older", 4), 2: ("same", 5), 3: ("old 3", 5)}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_duplicates_in_one_batch_behave_as_if_applied_in_order(strategy):
    rows = [row(1, "r1", 1), row(1, "r3", 3), row(1, "r2", 2), row(2, "a", 0), row(2, "b", 0)]
    result = bulk.apply_master_rows(SimplestModelRef, rows, strategy=strategy)
    assert (result.loaded, result.skipped) == (2, 3)
    assert state() == {1: ("r3", 3), 2: ("a", 0)}
    SimplestModelRef.objects.all().delete()
    result = bulk.apply_master_rows(SimplestModelRef, rows, sync=True, strategy=strategy)
    assert state() == {1: ("r2", 2), 2: ("b", 0)}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_failing_row_does_not_take_its_batch_down(strategy):
    seed()
    rows = [row(i, f"n{i}", 9) for i in range(1, 12)]
    rows[6]["cqrs_updated"] = None  # NOT NULL violation in the database
    rows[9]["name"] = None  # allowed: name is nullable
    result = bulk.apply_master_rows(SimplestModelRef, rows, strategy=strategy)
    assert result.loaded == 10
    assert [(f.index, f.reason.split(":")[0]) for f in result.failures] == [(6, "database error")]
    assert 7 not in state() and state()[1] == ("n1", 9) and state()[10] == (None, 9)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_uuid_and_fk_values(strategy):
    rows = [
        {"uid": "0b0c3f5e-1d4a-4f57-9a52-1f0b3c6b8a10", "name": "ü", "cqrs_revision": 0, "cqrs_updated": UPDATED},
        {"uid": "not-a-uuid", "name": "bad", "cqrs_revision": 0, "cqrs_updated": UPDATED},
    ]
    result = bulk.apply_master_rows(UUIDPkModelRef, rows, strategy=strategy)
    assert result.loaded == 1 and result.failures[0].index == 1 and "invalid value" in result.failures[0].reason
    result = bulk.apply_master_rows(
        FKModelRef, [{"id": 1, "publisher": 42, "name": "x", "cqrs_revision": 0, "cqrs_updated": UPDATED}], strategy=strategy
    )
    assert result.loaded == 1 and FKModelRef.objects.get(pk=1).publisher_id == 42


def test_update_keeps_columns_absent_from_the_row():
    SimplestModelRef.objects.create(id=1, name="keep me", cqrs_revision=0, cqrs_updated=timezone.now())
    result = bulk.upsert(SimplestModelRef, [{"id": 1, "cqrs_revision": 1, "cqrs_updated": UPDATED}])
    assert result.loaded == 1
    assert state() == {1: ("keep me", 1)}


def test_per_row_reasons():
    assert bulk.per_row_reason(SimplestModelRef) is None

    def receiver(**kwargs):
        pass

    signals.post_save.connect(receiver, sender=SimplestModelRef)
    try:
        assert bulk.per_row_reason(SimplestModelRef) == "pre_save/post_save receivers"
        # the per-row path runs the receivers, like the consumer does
        calls = []
        signals.post_save.connect(lambda **kw: calls.append(kw["instance"].pk), sender=SimplestModelRef, weak=False, dispatch_uid="t")
        result = bulk.apply_master_rows(SimplestModelRef, [row(1, "a", 0), row(1, "a", 0), row(2, "b", 0)])
        assert (result.loaded, result.skipped) == (2, 1) and calls == [1, 2]
    finally:
        signals.post_save.disconnect(receiver, sender=SimplestModelRef)
        signals.post_save.disconnect(sender=SimplestModelRef, dispatch_uid="t")


def test_unknown_strategy():
    with pytest.raises(ValueError):
        bulk.upsert(SimplestModelRef, [row(1, "a", 0)], strategy="nope")


def test_empty_input():
    assert bulk.upsert(SimplestModelRef, []).loaded == 0


def test_default_strategy_is_native_upsert_here():
    assert connection.vendor in bulk.UPSERT_VENDORS
