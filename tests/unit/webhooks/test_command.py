"""manage.py cqrs_subscriptions: a thin command over dj_cqrs.webhooks.subscriptions."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from dj_cqrs.models import WebhookDelivery, WebhookSubscription
from dj_cqrs.webhooks.delivery import SubscriptionDelivery
from tests.apps.master_app.models import SimplestModel

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("webhook_settings")]


def run(*args: str) -> str:
    out = StringIO()
    call_command("cqrs_subscriptions", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_add_list_pause_resume_remove():
    out = run(
        "add", "shop", "https://shop.example/hook", "--cqrs-id", "simplest", "--cqrs-id", "basic"
    )
    secret = WebhookSubscription.objects.get(name="shop").secret
    assert "Secret (shown once): " + secret in out and len(secret) >= 32
    out = run(
        "add", "audit", "http://127.0.0.1:8000/in", "--cqrs-id", "simplest", "--secret", "given"
    )
    assert "Secret" not in out
    listing = json.loads(run("list", "--json"))
    assert [(r["name"], r["cqrs_ids"], r["active"]) for r in listing] == [
        ("audit", ["simplest"], True),
        ("shop", ["simplest", "basic"], True),
    ]
    assert all("secret" not in r for r in listing) and secret not in run("list")
    run("pause", "shop")
    assert not WebhookSubscription.objects.get(name="shop").active
    assert "paused" in run("list")
    run("resume", "shop")
    assert WebhookSubscription.objects.get(name="shop").active
    run("remove", "audit")
    assert list(WebhookSubscription.objects.values_list("name", flat=True)) == ["shop"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add", "x", "ftp://h/x", "--cqrs-id", "simplest"], "http"),
        (["add", "x", "http://h/x", "--cqrs-id", "unknown_id"], "unknown CQRS_ID"),
        (["add", "x", "http://h/x", "--events", "bad..pattern"], "invalid event pattern"),
        (["remove", "missing"], "no subscription named 'missing'"),
        (["pause", "missing"], "no subscription named 'missing'"),
        (["replay", "missing", "--all"], "no subscription named 'missing'"),
    ],
)
def test_errors_are_command_errors(args, message):
    with pytest.raises(CommandError, match=message):
        run(*args)


def test_failures_and_replay(subscriber):
    run("add", "shop", "http://127.0.0.1:9/hook", "--cqrs-id", "simplest", "--secret", "k")
    obj = SimplestModel.objects.create(name="x")
    subscriber.fail = lambda d: 500
    sub = WebhookSubscription.objects.get(name="shop")
    SubscriptionDelivery("default", sub.id, "me", send=subscriber).run_pass()
    rows = json.loads(run("failures", "shop", "--json"))
    assert [
        (r["status"], r["cqrs_id"], r["key"], r["attempts"], r["last_status"]) for r in rows
    ] == [("failed", "simplest", str(obj.pk), 3, 500)]
    assert "HTTP 500" in run("failures")
    with pytest.raises(CommandError, match="--id"):
        run("replay", "shop")
    assert "Queued 1" in run("replay", "shop", "--id", str(rows[0]["id"]))
    assert WebhookDelivery.objects.get().status == "replay"
    subscriber.fail = lambda d: None
    SubscriptionDelivery("default", sub.id, "me", send=subscriber).run_pass()
    assert json.loads(run("failures", "--json")) == []
    assert json.loads(run("list", "--json"))[0]["failed"] == 0


@pytest.mark.parametrize("args", [("--interval", "-1"), ("--concurrency", "0")])
def test_webhooks_command_refuses_bad_numbers(args):
    # Regression: a negative --interval made idle threads look at the feed without any pause.
    with pytest.raises(CommandError, match=args[0]):
        call_command("cqrs_webhooks", *args)
