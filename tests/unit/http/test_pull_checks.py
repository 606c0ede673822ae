"""System checks of HTTP pull: W070 (tokens without the outbox), E070 (a bad CQRS_HTTP_TOKENS)."""

from __future__ import annotations

import pytest
from django.test import override_settings

from dj_cqrs.checks import check_http
from tests.apps.master_app.models import SimplestModel
from tests.unit.http.conftest import cqrs_with


def _ids(**sections):
    with override_settings(CQRS=cqrs_with(**sections)):
        return [m.id for m in check_http()]


def test_tokens_without_the_outbox_warn():
    assert _ids(http={"tokens": ["t"]}) == []
    assert _ids(http={"tokens": ["t"]}, master={"CQRS_OUTBOX": False}) == ["dj_cqrs.W070"]
    assert _ids(master={"CQRS_OUTBOX": False}) == []  # no pull served: nothing to say
    assert _ids(http={"tokens": 5}, master={"CQRS_OUTBOX": False}) == []  # E015 reports it


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (None, True),
        (["a", "b"], True),
        (lambda token: True, True),
        ("tests.unit.http.test_pull_view.accept_x", True),
        ("tests.unit.http.nope.accept", False),
        ("tests.unit.http.conftest.TOKEN", False),  # not callable
        (["a", ""], False),
        ([1], False),
        (5, False),
    ],
)
def test_model_tokens(monkeypatch, value, ok):
    monkeypatch.setattr(SimplestModel, "CQRS_HTTP_TOKENS", value, raising=False)
    messages = check_http()
    assert [m.id for m in messages] == ([] if ok else ["dj_cqrs.E070"])
    if not ok:
        assert messages[0].obj is SimplestModel and messages[0].hint


def test_retention_shorter_than_the_gap_timeout_warns():
    # Regression: outbox_retention 60 with the default gap_timeout (300) made every cursor 410 at
    # once, silently. Now W071 says so (and the view answers 503, see test_pull_view).
    assert _ids(http={"tokens": ["t"]}, master={"outbox_retention": 60}) == ["dj_cqrs.W071"]
    assert _ids(http={"tokens": ["t"], "gap_timeout": 302}, master={"outbox_retention": 304}) == [
        "dj_cqrs.W071"
    ]
    assert _ids(http={"tokens": ["t"], "gap_timeout": 10}, master={"outbox_retention": 60}) == []
    assert _ids(http={"tokens": ["t"]}, master={"outbox_retention": None}) == []
    assert _ids(master={"outbox_retention": 60}) == []  # no pull served: nothing to say
