"""W080 (lease vs timeout), the commit listeners of the master, and the admin actions."""

from __future__ import annotations

import logging

import pytest
from django.contrib.admin import site
from django.test import override_settings

from dj_cqrs.checks import check_webhooks
from dj_cqrs.master import commit_listeners
from dj_cqrs.models import OutboxEvent, WebhookDelivery, WebhookSubscription
from dj_cqrs.webhooks import subscriptions
from tests.apps.master_app.models import SimplestModel
from tests.unit.conftest import cqrs_with


def test_w080_when_a_delivery_may_outlast_the_lease():
    assert check_webhooks() == []
    with override_settings(CQRS=cqrs_with(webhooks={"lease": 20, "timeout": 10})):
        [warning] = check_webhooks()
    assert warning.id == "dj_cqrs.W080" and "twice" in warning.hint
    with override_settings(CQRS=cqrs_with(webhooks={"lease": "soon"})):
        assert check_webhooks() == []  # E016 reports it


@pytest.mark.django_db(transaction=True)
def test_a_commit_calls_the_listeners_and_a_failing_one_is_only_logged(transport, caplog):
    calls = []

    def broken(using: str) -> None:
        raise RuntimeError("boom")

    commit_listeners.add(calls.append)
    commit_listeners.add(broken)
    commit_listeners.add(calls.append)  # once only
    try:
        with caplog.at_level(logging.WARNING, logger="django-cqrs.outbox"):
            SimplestModel.objects.create(name="a")
    finally:
        commit_listeners.remove(calls.append)
        commit_listeners.remove(broken)
    assert calls == ["default"] and commit_listeners.listeners == ()
    assert "commit listener" in caplog.text
    SimplestModel.objects.create(name="b")
    assert calls == ["default"]


@pytest.mark.django_db
def test_admin_pause_resume_and_replay_actions(rf, admin_user, transport):
    sub = subscriptions.add("shop", "http://127.0.0.1:9/x", ["simplest"], secret="k")
    now = sub.created_at
    row = WebhookDelivery.objects.create(
        subscription=sub,
        position=1,
        event_id="e",
        cqrs_id="simplest",
        object_key="1",
        body="{}",
        status="failed",
        created_at=now,
        updated_at=now,
    )
    request = rf.post("/")
    request.user = admin_user
    request._messages = type("M", (), {"add": lambda *a, **k: None})()
    sub_admin = site._registry[WebhookSubscription]
    assert "secret" not in sub_admin.list_display
    sub_admin.pause(request, WebhookSubscription.objects.all())
    assert not WebhookSubscription.objects.get().active
    sub_admin.resume(request, WebhookSubscription.objects.all())
    assert WebhookSubscription.objects.get().active
    delivery_admin = site._registry[WebhookDelivery]
    assert not delivery_admin.has_add_permission(request)
    delivery_admin.replay(request, WebhookDelivery.objects.all())
    row.refresh_from_db()
    assert row.status == "replay"


@pytest.mark.django_db
def test_admin_form_validates_like_the_command_and_starts_at_the_head(rf, admin_user, transport):
    SimplestModel.objects.create(name="before")
    sub_admin = site._registry[WebhookSubscription]
    request = rf.post("/")
    request.user = admin_user
    form_class = sub_admin.get_form(request)
    data = {
        "name": "shop",
        "url": "ftp://x/y",
        "cqrs_ids": '["nope"]',
        "event_patterns": '"order.*"',
        "secret": "k",
        "active": "on",
    }
    form = form_class(data)
    assert not form.is_valid()
    assert "http" in str(form.errors["url"]) and "unknown CQRS_ID" in str(form.errors["cqrs_ids"])
    assert "JSON list" in str(form.errors["event_patterns"])
    form = form_class(
        {
            **data,
            "url": "https://shop.example/hook",
            "cqrs_ids": '["simplest"]',
            "event_patterns": "[]",
        }
    )
    assert form.is_valid(), form.errors
    obj = form.save(commit=False)
    sub_admin.save_model(request, obj, form, change=False)
    saved = WebhookSubscription.objects.get(name="shop")
    assert saved.position == OutboxEvent.objects.latest("id").id and saved.created_at is not None


@pytest.mark.django_db
def test_admin_never_shows_the_secret(client, admin_user, django_user_model, transport):
    # Regression: the change page rendered the stored secret in its text input (and a user with
    # the view permission only saw it as text), although it signs every delivery.
    from django.contrib.auth.models import Permission

    sub = subscriptions.add("shop", "http://127.0.0.1:9/x", ["simplest"], secret="the-s3cret")
    url = f"/admin/dj_cqrs/webhooksubscription/{sub.pk}/change/"
    client.force_login(admin_user)
    page = client.get(url)
    assert page.status_code == 200 and b'name="secret"' in page.content
    assert b"the-s3cret" not in page.content
    # Saved with the secret left blank: kept.
    data = {
        "name": "shop",
        "url": "http://127.0.0.1:9/y",
        "cqrs_ids": '["simplest"]',
        "event_patterns": "[]",
        "secret": "",
        "active": "on",
    }
    assert client.post(url, data).status_code == 302
    sub.refresh_from_db()
    assert sub.secret == "the-s3cret" and sub.url == "http://127.0.0.1:9/y"
    assert client.post(url, {**data, "secret": "new-one"}).status_code == 302
    sub.refresh_from_db()
    assert sub.secret == "new-one"
    # A new subscription needs a secret.
    added = client.post("/admin/dj_cqrs/webhooksubscription/add/", {**data, "name": "other"})
    assert added.status_code == 200 and b"a secret is required" in added.content
    # View permission only: the page has no secret at all.
    viewer = django_user_model.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_webhooksubscription"))
    client.force_login(viewer)
    page = client.get(url)
    assert page.status_code == 200 and b"new-one" not in page.content
    assert b"secret" not in page.content.lower().replace(b"csrf", b"")
