"""Equal revisions: a duplicate is ignored, unless its ``cqrs_updated`` is newer (django-cqrs
masters send two messages with one revision for two objects of a row saved in one transaction)."""

from __future__ import annotations

import datetime

import pytest

from dj_cqrs.replica.rules import is_newer
from tests.apps.replica_app.models import SimplestModelRef

T1 = "2026-11-22 09:23:25.883733+00:00"
T2 = "2026-11-22 09:23:25.888602+00:00"


def data(name: str, revision: int, updated: str) -> dict[str, object]:
    return {"id": 1, "name": name, "cqrs_revision": revision, "cqrs_updated": updated}


@pytest.mark.django_db
def test_equal_revision_with_newer_cqrs_updated_is_applied(caplog):
    SimplestModelRef.cqrs_save(data("first", 0, "2026-11-22 09:23:25+00:00"))
    SimplestModelRef.cqrs_save(data("stale", 2, T1))
    assert SimplestModelRef.cqrs_save(data("final", 2, T2))
    row = SimplestModelRef.objects.get(pk=1)
    assert (row.name, row.cqrs_revision) == ("final", 2)
    assert "Same CQRS revision with a newer cqrs_updated, applied" in caplog.text


@pytest.mark.django_db
def test_equal_revision_with_same_or_older_cqrs_updated_is_a_duplicate(caplog):
    SimplestModelRef.cqrs_save(data("final", 2, T2))
    SimplestModelRef.cqrs_save(data("stale", 2, T1))  # arrived second, older
    SimplestModelRef.cqrs_save(data("redelivered", 2, T2))  # same instant: a duplicate
    assert SimplestModelRef.objects.get(pk=1).name == "final"
    assert caplog.text.count("Received duplicate CQRS data") == 2


def test_is_newer():
    utc = datetime.timezone.utc
    stored = datetime.datetime(2026, 11, 22, 9, 23, 25, 883733, tzinfo=utc)
    assert is_newer(T2, stored)
    assert not is_newer(T1, stored)
    assert is_newer("2026-11-22 09:23:26", stored)  # naive: UTC
    assert is_newer(stored + datetime.timedelta(microseconds=1), stored)
    assert not is_newer("not a date", stored)
    assert not is_newer(None, stored)
    assert not is_newer(T2, None)
