"""The pull endpoint (dj_cqrs.http.views): snapshot then changes, cursors, auth, errors."""

from __future__ import annotations

import base64
import json
import time

import pytest
from django.test import override_settings

from dj_cqrs.http import cursor as cursor_mod
from tests.apps.master_app.models import SimplestModel
from tests.unit.http.conftest import OTHER, TOKEN, cqrs_with

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("pull_settings")]

URL = "/cqrs/pull/simplest/"


def get(client, url=URL, token=TOKEN, **params):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.get(url, params, headers=headers)


def pull_all(client, after=None, limit=3, cqrs_id="simplest"):
    """Every item up to the end of the feed, and the last cursor."""
    items, pages = [], 0
    while True:
        params = {"limit": limit}
        if after:
            params["after"] = after
        response = get(client, f"/cqrs/pull/{cqrs_id}/", **params)
        assert response.status_code == 200, response.content
        data = response.json()
        items += data["items"]
        after, pages = data["next"], pages + 1
        assert pages < 1000
        if not data["has_more"]:
            return items, after


def test_snapshot_then_changes_as_wire_bodies(client):
    rows = [SimplestModel.objects.create(name=f"n{i}") for i in range(7)]
    response = get(client, limit=3)
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    assert response["Content-Type"] == "application/json"
    page = response.json()
    assert page["has_more"] is True
    assert [i["instance_pk"] for i in page["items"]] == [r.pk for r in rows[:3]]
    first = page["items"][0]
    assert first["signal_type"] == "SAVE" and first["cqrs_id"] == "simplest"
    assert first["instance_data"]["name"] == "n0"
    assert first["instance_data"]["cqrs_revision"] == 0
    assert "cqrs_updated" in first["instance_data"]
    assert set(first) == {
        "signal_type",
        "cqrs_id",
        "instance_data",
        "previous_data",
        "instance_pk",
        "correlation_id",
        "retries",
        "expires",
        "meta",
    }
    items, after = pull_all(client, after=page["next"])
    # The rest of the snapshot; the feed's SAVEs of the rows created before the head are not served again.
    assert [i["instance_pk"] for i in items] == [r.pk for r in rows[3:]]

    # Changes follow in commit order, deletes included.
    rows[0].name = "changed"
    rows[0].save()
    gone = rows[1].pk
    rows[1].delete()
    new = SimplestModel.objects.create(name="new")
    items, after2 = pull_all(client, after=after)
    assert [(i["signal_type"], i["instance_pk"]) for i in items] == [
        ("SAVE", rows[0].pk),
        ("DELETE", gone),
        ("SAVE", new.pk),
    ]
    assert items[0]["instance_data"] == {
        **items[0]["instance_data"],
        "name": "changed",
        "cqrs_revision": 1,
    }
    assert items[1]["instance_data"]["id"] == gone
    # Nothing new: an empty page, the cursor still valid.
    again = get(client, after=after2).json()
    assert again["items"] == [] and again["has_more"] is False


def test_snapshot_is_stable_while_rows_change(client):
    rows = [SimplestModel.objects.create(name=f"n{i}") for i in range(10)]
    page = get(client, limit=4).json()
    assert [i["instance_pk"] for i in page["items"]] == [r.pk for r in rows[:4]]
    # While the snapshot is read: a row behind it changes, one ahead is deleted, one is created.
    rows[1].name = "behind"
    rows[1].save()
    gone = rows[6].pk
    rows[6].delete()
    added = SimplestModel.objects.create(name="added")
    items, _ = pull_all(client, after=page["next"], limit=4)
    snapshot = [i for i in items if i["signal_type"] == "SAVE"]
    pks = [i["instance_pk"] for i in items]
    # Keyset: every remaining row exactly once in the snapshot, none skipped.
    assert pks[:6] == [r.pk for r in rows[4:] if r.pk] + [added.pk]
    # Then the feed from the head taken before the snapshot: every change made meanwhile.
    tail = [(i["signal_type"], i["instance_pk"]) for i in items[6:]]
    assert tail == [("SAVE", rows[1].pk), ("DELETE", gone), ("SAVE", added.pk)]
    assert snapshot[-1]["instance_data"]["name"] == "added"
    # Folding the pages in order gives the master's state.
    state = {}
    for item in get(client, limit=100).json()["items"] + items:
        if item["signal_type"] == "DELETE":
            state.pop(item["instance_pk"], None)
        else:
            state[item["instance_pk"]] = item["instance_data"]["name"]
    assert state == dict(SimplestModel.objects.values_list("pk", "name"))


def test_limit_bounds(client, settings):
    SimplestModel.objects.create(name="a")
    for bad in ("0", "-1", "x", "5001", "1.5"):
        response = get(client, limit=bad)
        assert response.status_code == 400, bad
        assert response.json()["error"] == "bad_request"
        assert "limit" in response.json()["detail"]
    assert get(client, limit="5000").status_code == 200
    with override_settings(
        CQRS=cqrs_with(http={"tokens": [TOKEN], "max_limit": 2, "default_limit": 1})
    ):
        assert len(get(client).json()["items"]) == 1
        assert get(client, limit=3).status_code == 400


def test_auth(client):
    SimplestModel.objects.create(name="a")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        response = client.get(URL, headers=headers)
        assert response.status_code == 401
        assert response["WWW-Authenticate"].startswith("Bearer")
        assert response.json()["error"] == "unauthorized"
    with override_settings(CQRS=cqrs_with(http={"tokens": None})):
        assert get(client).status_code == 401
    with override_settings(CQRS=cqrs_with(http={"tokens": lambda token: token == "fn-token"})):
        assert get(client, token="fn-token").status_code == 200
        assert get(client).status_code == 401
    with override_settings(
        CQRS=cqrs_with(http={"tokens": "tests.unit.http.test_pull_view.accept_x"})
    ):
        assert get(client, token="x").status_code == 200
        assert get(client, token="y").status_code == 401


def accept_x(token):
    return token == "x"


def test_model_token_restriction(client, monkeypatch):
    SimplestModel.objects.create(name="a")
    monkeypatch.setattr(SimplestModel, "CQRS_HTTP_TOKENS", [OTHER], raising=False)
    response = get(client)
    assert response.status_code == 403
    assert "may not pull" in response.json()["detail"]
    assert get(client, token=OTHER).status_code == 200
    monkeypatch.setattr(
        SimplestModel, "CQRS_HTTP_TOKENS", lambda token: token == TOKEN, raising=False
    )
    assert get(client).status_code == 200
    assert get(client, token=OTHER).status_code == 403
    # The restriction never lets in a token the settings refuse.
    assert get(client, token="unknown").status_code == 401


def test_methods(client):
    for method in ("post", "put", "delete", "patch"):
        response = getattr(client, method)(URL, headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 405
        assert response["Allow"] == "GET, HEAD"
    assert client.head(URL, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_unknown_cqrs_id_and_bad_cursors(client):
    response = get(client, "/cqrs/pull/nope/")
    assert response.status_code == 400
    assert "unknown cqrs_id" in response.json()["detail"]
    SimplestModel.objects.create(name="a")
    good = get(client).json()["next"]
    foreign = get(client, "/cqrs/pull/basic/").json()["next"]
    raw = json.loads(base64.urlsafe_b64decode(good + "=" * (-len(good) % 4)))

    def enc(data):
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    bad = [
        "garbage!!",
        "e30",  # {}
        enc({**raw, "v": 99}),
        enc({**raw, "p": "x"}),
        enc({**raw, "f": -1}),
        enc({**raw, "h": "1"}),
        enc({**raw, "k": {"a": 1}}),
        enc([1, 2]),
        foreign,
    ]
    for after in bad:
        response = get(client, after=after)
        assert response.status_code == 400, after
        assert response.json()["detail"].startswith("bad cursor")
    assert "another cqrs_id" in get(client, after=foreign).json()["detail"]


def test_cursor_older_than_retention_is_gone(client):
    SimplestModel.objects.create(name="a")
    retention = {"outbox_retention": 400}
    with override_settings(
        CQRS=cqrs_with(master=retention, http={"tokens": [TOKEN], "gap_timeout": 300})
    ):
        fresh = get(client).json()["next"]
        assert get(client, after=fresh).status_code == 200
        old = cursor_mod.decode(fresh, "simplest")
        stale = cursor_mod.Cursor(
            old.cqrs_id, old.phase, old.head, old.last_pk, old.position, time.time() - 120
        )
        response = get(client, after=stale.encode())
        assert response.status_code == 410
        assert response.json()["error"] == "gone"
        assert "without `after`" in response.json()["detail"]
    # Without retention (rows kept forever) no cursor is too old.
    with override_settings(
        CQRS=cqrs_with(master={"outbox_retention": None}, http={"tokens": [TOKEN]})
    ):
        assert get(client, after=stale.encode()).status_code == 200


def test_outbox_off_is_unavailable(client):
    with override_settings(CQRS=cqrs_with(master={"CQRS_OUTBOX": False}, http={"tokens": [TOKEN]})):
        response = get(client)
    assert response.status_code == 503
    assert "CQRS_OUTBOX" in response.json()["detail"]


def test_retention_no_longer_than_the_gap_timeout_is_unavailable(client):
    # Regression: with outbox_retention (60) below gap_timeout (300) + 2 s, the first page came
    # back and every cursor then got 410 ("start again without after"): a client started over for
    # ever. No cursor can be honoured, so every pull is refused with the reason.
    SimplestModel.objects.create(name="a")
    with override_settings(
        CQRS=cqrs_with(master={"outbox_retention": 60}, http={"tokens": [TOKEN]})
    ):
        response = get(client)
        assert response.status_code == 503
        assert response.json()["error"] == "unavailable"
        assert "outbox_retention" in response.json()["detail"]
        assert "gap_timeout" in response.json()["detail"]
    with override_settings(
        CQRS=cqrs_with(master={"outbox_retention": 60}, http={"tokens": [TOKEN], "gap_timeout": 10})
    ):
        first = get(client)
        assert first.status_code == 200
        assert get(client, after=first.json()["next"]).status_code == 200


def test_non_integer_keys_and_empty_model(client):
    # An empty model: the snapshot ends at once, the feed follows.
    page = get(client, "/cqrs/pull/basic/").json()
    assert page["items"] == [] and page["has_more"] is True
    page = get(client, "/cqrs/pull/basic/", after=page["next"]).json()
    assert page == {"items": [], "next": page["next"], "has_more": False}


def test_uuid_keys_in_keyset_order(client):
    from tests.apps.master_app.models import UUIDPkModel

    rows = sorted((UUIDPkModel.objects.create() for _ in range(5)), key=lambda r: r.pk)
    items, _ = pull_all(client, cqrs_id="uuid_pk", limit=2)
    assert [i["instance_pk"] for i in items] == [str(r.pk) for r in rows]


def test_a_backlog_keeps_cursors_fresh_by_the_rows_read(client):
    """On a master busy enough that the feed always has more, the cursor's age follows the outbox
    rows read, not the start of the pull (which would expire a client keeping up)."""
    import datetime

    from django.utils import timezone

    from dj_cqrs.models import OutboxEvent

    SimplestModel.objects.create(name="a")
    _, after = pull_all(client)
    rows = [SimplestModel.objects.create(name=f"b{i}") for i in range(3)]
    ids = list(OutboxEvent.objects.order_by("id").values_list("id", flat=True))[-3:]
    hour_ago = timezone.now() - datetime.timedelta(hours=1)
    for n, outbox_id in enumerate(ids):
        OutboxEvent.objects.filter(id=outbox_id).update(
            created_at=hour_ago + datetime.timedelta(minutes=n)
        )
    # An old cursor (the pull began two hours ago) reading a backlog, one item a page.
    start = cursor_mod.decode(after, "simplest")
    old = cursor_mod.Cursor(
        "simplest", start.phase, start.head, None, start.position, time.time() - 7200
    )
    page = get(client, after=old.encode(), limit=1).json()
    assert page["has_more"] and page["items"][0]["instance_pk"] == rows[0].pk
    since = cursor_mod.decode(page["next"], "simplest").since
    assert abs(since - (hour_ago.timestamp() - 2.0)) < 0.01
    page = get(client, after=page["next"], limit=1).json()
    assert (
        abs(cursor_mod.decode(page["next"], "simplest").since - (hour_ago.timestamp() + 58.0))
        < 0.01
    )
    # Caught up: the cursor is as young as the read.
    page = get(client, after=page["next"], limit=5).json()
    assert not page["has_more"]
    assert time.time() - cursor_mod.decode(page["next"], "simplest").since < 5
