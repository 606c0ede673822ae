"""The ops admin pages through Django's test client: outbox actions, dead letters (browse,
replay, purge), tombstones and the inbox; permissions and the admin log."""

from __future__ import annotations

import datetime
import json

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone

from dj_cqrs.models import InboxEntry, OutboxEvent, Tombstone
from dj_cqrs.ops.dead_letter_admin import digest
from dj_cqrs.replica import dead_letters
from tests.apps.master_app.models import SimplestModel
from tests.apps.replica_app.models import FlakyModelRef, SimplestModelRef

pytestmark = pytest.mark.django_db(transaction=True)

OUTBOX = "/admin/dj_cqrs/outboxevent/"
DEAD = "/admin/dj_cqrs/tombstone/dead-letters/"


def _client(*codenames):
    user = User.objects.create_user("ops", password="x", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="dj_cqrs", codename__in=codenames)
    )
    client = Client()
    client.force_login(user)
    return client


def _pending(obj, age=60, attempts=0, error=""):
    """The outbox row of a change whose publication failed (the broker was down)."""
    row = OutboxEvent.objects.get(
        cqrs_id="simplest", object_pk=str(obj.pk), published_at__isnull=True
    )
    OutboxEvent.objects.filter(pk=row.pk).update(
        created_at=timezone.now() - datetime.timedelta(seconds=age),
        attempts=attempts,
        last_error=error,
    )
    return row


def _failed_save(transport, name="a"):
    transport.fail_with = ConnectionError("broker down")
    obj = SimplestModel.objects.create(name=name)
    transport.fail_with = None
    return obj


def test_outbox_list_shows_state_age_and_error(transport):
    obj = _failed_save(transport)
    _pending(obj, age=600, attempts=2, error="ConnectionFailed('broker down')")
    now = timezone.now()
    OutboxEvent.objects.create(
        created_at=now, published_at=now, cqrs_id="simplest", signal_type="SAVE", object_pk="9"
    )
    client = _client("view_outboxevent")
    page = client.get(OUTBOX).content.decode()
    assert (
        '<td class="field-state">failed</td>' in page
        and '<td class="field-state">published</td>' in page
    )
    assert '<td class="field-age">10min</td>' in page
    assert "ConnectionFailed(&#x27;broker down&#x27;)" in page
    failed = client.get(OUTBOX + "?state=failed").content.decode()
    assert (
        failed.count('class="field-state"') == 1 and '<td class="field-state">failed</td>' in failed
    )
    assert (
        client.get(OUTBOX + "?state=published").content.decode().count('class="field-state"') == 1
    )
    assert client.get(OUTBOX + "?state=pending").content.decode().count('class="field-state"') == 1
    assert client.get(OUTBOX + "add/").status_code == 403


def test_publish_now_goes_through_the_publisher_and_is_logged(transport):
    obj = _failed_save(transport)
    row = _pending(obj, attempts=1, error="x")
    assert transport.published == []
    client = _client("view_outboxevent", "change_outboxevent")
    response = client.post(
        OUTBOX, {"action": "publish_now", "_selected_action": [row.pk]}, follow=True
    )
    assert "1 event published." in response.content.decode()
    row.refresh_from_db()
    assert row.published_at is not None
    assert [m.payload.instance_data["name"] for m in transport.published] == ["a"]
    entry = LogEntry.objects.get()
    assert entry.change_message.startswith("Published 1 outbox event now (ids ")
    transport.join(fail_fast=True)
    assert SimplestModelRef.objects.get(pk=obj.pk).name == "a"


def test_publish_now_failure_counts_an_attempt(transport):
    obj = _failed_save(transport)
    row = _pending(obj)
    transport.fail_with = ConnectionError("still down")
    client = _client("view_outboxevent", "change_outboxevent")
    response = client.post(
        OUTBOX, {"action": "publish_now", "_selected_action": [row.pk]}, follow=True
    )
    assert "Publishing failed" in response.content.decode()
    row.refresh_from_db()
    assert row.published_at is None and row.attempts == 1 and "still down" in row.last_error
    assert "failed" in LogEntry.objects.get().change_message


def test_retry_resets_failures(transport):
    obj = _failed_save(transport)
    row = _pending(obj, attempts=5, error="boom")
    client = _client("view_outboxevent", "change_outboxevent")
    client.post(OUTBOX, {"action": "retry", "_selected_action": [row.pk]})
    row.refresh_from_db()
    assert (row.attempts, row.last_error, row.published_at) == (0, "", None)
    assert "Reset the failures of 1 outbox event " in LogEntry.objects.get().change_message


def test_delete_asks_for_confirmation(transport):
    obj = _failed_save(transport)
    row = _pending(obj)
    client = _client("view_outboxevent", "delete_outboxevent")
    response = client.post(OUTBOX, {"action": "delete_selected", "_selected_action": [row.pk]})
    assert (
        "Delete multiple objects" in response.content.decode()
        and OutboxEvent.objects.filter(pk=row.pk).exists()
    )
    client.post(OUTBOX, {"action": "delete_selected", "_selected_action": [row.pk], "post": "yes"})
    assert not OutboxEvent.objects.filter(pk=row.pk).exists()
    assert LogEntry.objects.get().is_deletion()


@pytest.mark.django_db(transaction=True, databases=["default", "other"])
def test_outbox_of_another_database_is_listed_shown_and_acted_on(transport):
    transport.fail_with = ConnectionError("broker down")
    SimplestModel.objects.create(name="on default")
    on_other = SimplestModel.objects.using("other").create(name="on other")
    transport.fail_with = None
    row = OutboxEvent.objects.using("other").get(published_at__isnull=True)
    OutboxEvent.objects.using("other").filter(pk=row.pk).update(attempts=3, last_error="on other")
    client = _client("view_outboxevent", "change_outboxevent", "delete_outboxevent")

    listed = client.get(OUTBOX).content.decode()
    assert "?database=other" in listed  # the filter is offered
    assert "on other" not in listed
    page = client.get(OUTBOX + "?database=other").content.decode()
    assert page.count('class="field-state"') == 1 and "on other" in page
    # the detail page reached from the filtered list is the other database's row
    detail = client.get(f"{OUTBOX}{row.pk}/change/?_changelist_filters=database%3Dother")
    assert detail.status_code == 200 and "on other" in detail.content.decode()

    client.post(OUTBOX + "?database=other", {"action": "retry", "_selected_action": [row.pk]})
    row.refresh_from_db(using="other")
    assert (row.attempts, row.last_error) == (0, "")
    client.post(OUTBOX + "?database=other", {"action": "publish_now", "_selected_action": [row.pk]})
    row.refresh_from_db(using="other")
    assert row.published_at is not None
    assert [m.payload.pk for m in transport.published] == [on_other.pk]
    assert OutboxEvent.objects.using("default").get(published_at__isnull=True)  # untouched
    client.post(
        OUTBOX + "?database=other",
        {"action": "delete_selected", "_selected_action": [row.pk], "post": "yes"},
    )
    assert not OutboxEvent.objects.using("other").filter(pk=row.pk).exists()


def test_actions_need_the_model_permission(transport):
    obj = _failed_save(transport)
    row = _pending(obj)
    viewer = _client("view_outboxevent")
    page = viewer.get(OUTBOX).content.decode()
    assert "publish_now" not in page and "retry" not in page
    viewer.post(OUTBOX, {"action": "publish_now", "_selected_action": [row.pk]})
    row.refresh_from_db()
    assert row.published_at is None and transport.published == []
    assert Client().get(OUTBOX).status_code == 302  # not logged in: to the login page
    nobody = User.objects.create_user("staff", password="x", is_staff=True)
    client = Client()
    client.force_login(nobody)
    assert client.get(OUTBOX).status_code == 403
    assert client.get(DEAD).status_code == 403


def _body(pk):
    return json.dumps(
        {
            "signal_type": "SAVE",
            "cqrs_id": "simplest_flaky",
            "instance_data": {
                "id": pk,
                "name": f"flaky {pk}",
                "cqrs_revision": 0,
                "cqrs_updated": "2026-01-01 00:00:00+00:00",
            },
            "previous_data": None,
            "instance_pk": pk,
            "correlation_id": "corr",
            "retries": 0,
            "expires": None,
            "meta": {},
        }
    ).encode()


def test_dead_letters_page_browse_and_replay_selected_applies_it(transport):
    FlakyModelRef.fail_times = 10**6  # the replica fails on it until "fixed"
    transport.send_raw(_body(3), "simplest_flaky")
    transport.send_raw(_body(4), "simplest_flaky")
    transport.send_raw(b"not json", "simplest")
    transport.join()
    assert len(transport.dead_letters) == 3

    client = _client("view_tombstone", "change_tombstone", "delete_tombstone")
    page = client.get(DEAD).content.decode()
    assert "3 letters in <code>dead_letter_replica</code>" in page
    assert "max_retries" in page and "invalid_json" in page
    assert (
        "<code>x-cqrs-reason</code>: max_retries" in page
        and "<td>3</td><td>0</td><td>max_retries</td>" in page
    )
    filtered = client.get(DEAD + "?cqrs_id=simplest_flaky&reason=max_retries").content.decode()
    assert filtered.count('name="letter"') == 2
    assert client.get(DEAD + "?reason=invalid_json").content.decode().count('name="letter"') == 1

    FlakyModelRef.fail_times = 0  # the cause is fixed
    store = dead_letters.store_for(transport)
    letter = next(
        dead_letters.browse(store, where=lambda x: (x.data or {}).get("instance_pk") == 3)
    )
    response = client.post(
        DEAD, {"action": "replay_selected", "letter": [digest(letter)]}, follow=True
    )
    assert "Replayed 1 dead letter (1 selected)" in response.content.decode()
    assert len(transport.dead_letters) == 2  # the other two stay
    transport.join(fail_fast=True)
    assert FlakyModelRef.objects.get(pk=3).name == "flaky 3"  # the replay applied it
    assert not FlakyModelRef.objects.filter(pk=4).exists()
    assert (
        "Dead letters: Replayed 1 dead letter (1 selected)" in LogEntry.objects.get().change_message
    )


def test_replay_all_matching_and_purge_with_confirmation(transport):
    for _ in range(3):
        transport.send_raw(b"[1]", "simplest")
    transport.join()
    assert len(transport.dead_letters) == 3
    client = _client("view_tombstone", "change_tombstone", "delete_tombstone")
    response = client.post(DEAD, {"action": "replay_all", "cqrs_id": "?"}, follow=True)
    assert (
        "Replayed 0 dead letters (all with CQRS_ID ?); not replayed: 3 malformed"
        in response.content.decode()
    )
    response = client.post(DEAD, {"action": "purge_all"})
    assert "Are you sure?" in response.content.decode() and len(transport.dead_letters) == 3
    response = client.post(DEAD, {"action": "purge_all", "confirm": "yes"}, follow=True)
    assert "Purged 3 dead letters (all)" in response.content.decode()
    assert transport.dead_letters == []


def test_purge_selected_and_permissions(transport):
    transport.send_raw(b"one", "simplest")
    transport.send_raw(b"two", "simplest")
    transport.join()
    store = dead_letters.store_for(transport)
    first = next(dead_letters.browse(store))
    viewer = _client("view_tombstone")
    page = viewer.get(DEAD).content.decode()
    assert "Replay selected" not in page and "Purge selected" not in page
    assert (
        viewer.post(
            DEAD, {"action": "purge_selected", "letter": [digest(first)], "confirm": "yes"}
        ).status_code
        == 403
    )
    assert viewer.post(DEAD, {"action": "replay_all"}).status_code == 403
    assert len(transport.dead_letters) == 2
    User.objects.all().delete()
    purger = _client("view_tombstone", "delete_tombstone")
    purger.post(DEAD, {"action": "purge_selected", "letter": [digest(first)], "confirm": "yes"})
    assert [m.body for m, _ in transport.dead_letters] == [b"two"]
    response = purger.post(DEAD, {"action": "purge_selected"}, follow=True)
    assert "Select the letters first." in response.content.decode()


def test_tombstones_and_inbox_are_read_only(transport):
    now = timezone.now()
    stone = Tombstone.objects.create(
        cqrs_id="simplest", object_pk="7", revision=3, deleted_at=now, recorded_at=now
    )
    InboxEntry.objects.create(
        handler="h", event_id="e1", name="order.paid", key="o1", seq=1, handled_at=now
    )
    client = _client(
        "view_tombstone",
        "delete_tombstone",
        "view_inboxentry",
        "change_tombstone",
        "delete_inboxentry",
    )
    tombstones = client.get("/admin/dj_cqrs/tombstone/").content.decode()
    assert "dead-letters/" in tombstones and "simplest" in tombstones
    assert client.get("/admin/dj_cqrs/tombstone/add/").status_code == 403
    client.post(f"/admin/dj_cqrs/tombstone/{stone.pk}/change/", {"revision": 9})
    stone.refresh_from_db()
    assert stone.revision == 3
    client.post(f"/admin/dj_cqrs/tombstone/{stone.pk}/delete/", {"post": "yes"})
    assert not Tombstone.objects.exists()
    inbox = client.get("/admin/dj_cqrs/inboxentry/").content.decode()
    assert "order.paid" in inbox
    assert client.get("/admin/dj_cqrs/inboxentry/add/").status_code == 403
    entry = InboxEntry.objects.get()
    assert (
        client.post(f"/admin/dj_cqrs/inboxentry/{entry.pk}/delete/", {"post": "yes"}).status_code
        == 403
    )
