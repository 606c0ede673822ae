"""One delivery pass (dj_cqrs.webhooks.delivery): order, retries, parking, held, replay, leases."""

from __future__ import annotations

import pytest

from dj_cqrs.models import OutboxEvent, WebhookDelivery, WebhookSubscription
from dj_cqrs.webhooks import leases, subscriptions
from dj_cqrs.webhooks.delivery import SubscriptionDelivery, retry_delay
from tests.apps.master_app.models import BasicFieldsModel, SimplestModel

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("webhook_settings")]


def _sub(**kwargs) -> WebhookSubscription:
    return subscriptions.add(
        "shop",
        "http://127.0.0.1:9/hook",
        kwargs.pop("cqrs_ids", ["simplest"]),
        secret="k",
        **kwargs,
    )


def _pass(subscriber, owner="me"):
    sub = WebhookSubscription.objects.get(name="shop")
    result = SubscriptionDelivery("default", sub.id, owner, send=subscriber).run_pass()
    return result, WebhookSubscription.objects.get(id=sub.id)


def test_new_subscriptions_start_at_the_head_and_get_changes_in_order(subscriber):
    SimplestModel.objects.create(name="before")
    _sub()
    a = SimplestModel.objects.create(name="a")
    b = SimplestModel.objects.create(name="b")
    BasicFieldsModel.objects.create(int_field=1, char_field="not subscribed")
    a.name = "a"
    a.save()
    b_pk = b.pk
    b.delete()
    result, sub = _pass(subscriber)
    # The feed serves current state: b's SAVE is not served (b is gone, its DELETE follows), and
    # a's two SAVEs carry the same body (same event id), sent once.
    assert result.delivered == 2 and result.parked == 0
    kinds = [(d["signal_type"], d["instance_pk"]) for _, d, _ in subscriber.calls]
    assert kinds == [("SAVE", a.pk), ("DELETE", b_pk)]
    assert all(url == "http://127.0.0.1:9/hook" for url, _, _ in subscriber.calls)
    assert sub.position == OutboxEvent.objects.latest("id").id and sub.last_delivered_at is not None
    # Caught up: a second pass sends nothing.
    subscriber.calls.clear()
    assert _pass(subscriber)[0].delivered == 0 and subscriber.calls == []


def test_from_start_delivers_what_is_in_the_outbox():
    SimplestModel.objects.create(name="before")
    sub = subscriptions.add("old", "https://example.com/x", ["simplest"], from_start=True)
    assert sub.position == 0


def test_retries_then_parks_as_failed_and_holds_later_changes_of_the_object(subscriber):
    _sub()
    bad = SimplestModel.objects.create(name="bad")
    SimplestModel.objects.create(name="good")
    bad.name = "bad"
    bad.save()  # revision 1 of "bad": must not overtake revision 0
    subscriber.fail = lambda d: 500 if d["instance_data"]["name"] == "bad" else None
    result, sub = _pass(subscriber)
    # 3 attempts for the first change of "bad"; its second change is held without a try.
    assert [d["instance_data"]["name"] for _, d, _ in subscriber.calls] == ["bad"] * 3 + ["good"]
    assert result.delivered == 1 and result.parked == 2
    rows = list(WebhookDelivery.objects.order_by("id"))
    assert [(r.status, r.object_key, r.attempts, r.last_status) for r in rows] == [
        ("failed", str(bad.pk), 3, 500),
        ("held", str(bad.pk), 0, None),
    ]
    assert rows[0].last_error == "HTTP 500" and sub.last_error == ""  # "good" went through since
    assert sub.position == OutboxEvent.objects.latest("id").id  # moved past the parked items

    # Still failing: nothing is retried on its own, and the object's next change is held too.
    subscriber.calls.clear()
    bad.save()
    _pass(subscriber)
    assert subscriber.calls == []
    assert WebhookDelivery.objects.filter(status="held").count() == 2

    # Replayed once the subscriber is back: the failed one first, then the held ones, in order.
    subscriber.fail = lambda d: None
    assert subscriptions.replay("shop") == 1
    result, _ = _pass(subscriber)
    sent = [
        (d["instance_pk"], d["instance_data"]["cqrs_revision"], e) for _, d, e in subscriber.calls
    ]
    assert [pk for pk, _, _ in sent] == [bad.pk] * 3
    assert [rev for _, rev, _ in sent] == sorted(rev for _, rev, _ in sent) and sent[-1][1] == 2
    assert [e for _, _, e in sent] == [r.event_id for r in rows] + [sent[-1][2]]
    assert result.delivered == 3 and not WebhookDelivery.objects.exists()
    # Later changes are sent directly again.
    subscriber.calls.clear()
    bad.save()
    _pass(subscriber)
    assert len(subscriber.calls) == 1


def test_a_replay_that_fails_again_is_failed_again_and_its_held_stay(subscriber):
    _sub()
    obj = SimplestModel.objects.create(name="x")
    obj.save()
    subscriber.fail = lambda d: 0  # connection refused
    _pass(subscriber)
    assert list(WebhookDelivery.objects.values_list("status", flat=True).order_by("id")) == [
        "failed",
        "held",
    ]
    subscriptions.replay(
        "shop",
        ids=list(WebhookDelivery.objects.filter(status="failed").values_list("id", flat=True)),
    )
    assert list(WebhookDelivery.objects.values_list("status", flat=True).order_by("id")) == [
        "replay",
        "held",
    ]
    subscriber.calls.clear()
    _pass(subscriber)
    assert len(subscriber.calls) == 3  # the replay's attempts; the held one waits
    row = WebhookDelivery.objects.order_by("id").first()
    assert row.status == "failed" and row.attempts == 6
    assert list(WebhookDelivery.objects.values_list("status", flat=True).order_by("id")) == [
        "failed",
        "held",
    ]


def test_held_deliveries_go_out_once_their_failure_is_deleted(subscriber):
    _sub()
    obj = SimplestModel.objects.create(name="x")
    obj.save()
    subscriber.fail = lambda d: 503
    _pass(subscriber)
    WebhookDelivery.objects.filter(status="failed").delete()  # an operator gave up on it
    subscriber.fail = lambda d: None
    subscriber.calls.clear()
    result, _ = _pass(subscriber)
    assert result.delivered == 1 and not WebhookDelivery.objects.exists()


def test_batches_continue_until_caught_up(subscriber):
    _sub()
    for i in range(11):
        SimplestModel.objects.create(name=str(i))
    result, sub = _pass(subscriber)  # batch_size 4, max 10 pages a pass
    assert result.delivered == 11 and not result.more
    assert [d["instance_data"]["name"] for _, d, _ in subscriber.calls] == [
        str(i) for i in range(11)
    ]


def test_only_one_owner_holds_a_lease_until_it_expires_or_is_released(subscriber):
    sub = _sub()
    assert leases.acquire("default", sub.id, "a")
    assert not leases.acquire("default", sub.id, "b")
    assert _pass(subscriber, owner="b")[0] is None  # not ours: nothing delivered
    assert leases.renew("default", sub.id, "a")
    leases.release("default", sub.id, "a")
    assert leases.acquire("default", sub.id, "b")
    # Expired: taken over.
    WebhookSubscription.objects.filter(id=sub.id).update(lease_until="2000-01-01T00:00:00Z")
    assert leases.acquire("default", sub.id, "c")
    assert not leases.advance("default", sub.id, "b", 10, True)  # b lost it: no position write
    # Paused: nobody gets it.
    subscriptions.set_active("shop", False)
    assert not leases.acquire("default", sub.id, "c")


def test_a_lost_lease_interrupts_the_pass_before_the_next_item(subscriber):
    sub = _sub()
    SimplestModel.objects.create(name="a")
    SimplestModel.objects.create(name="b")

    def steal(d):
        WebhookSubscription.objects.filter(id=sub.id).update(lease_owner="thief")
        return None

    subscriber.fail = steal
    result, fresh = _pass(subscriber)
    assert len(subscriber.calls) == 1 and fresh.position == sub.position  # "a" is sent again later


def test_retry_delay_grows_exponentially_and_is_capped(settings):
    from tests.unit.conftest import cqrs_with

    settings.CQRS = cqrs_with(webhooks={"retry_delay": 1.0, "max_retry_delay": 5})
    assert [retry_delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_subscription_validation():
    with pytest.raises(subscriptions.SubscriptionError, match="http"):
        subscriptions.add("x", "ftp://host/x", ["simplest"])
    with pytest.raises(subscriptions.SubscriptionError, match="unknown CQRS_ID.*nope"):
        subscriptions.add("x", "http://host/x", ["nope"])
    with pytest.raises(subscriptions.SubscriptionError, match="invalid event pattern"):
        subscriptions.add("x", "http://host/x", [], ["a..b"])
    with pytest.raises(subscriptions.SubscriptionError, match="at least one"):
        subscriptions.add("x", "http://host/x", [])
    subscriptions.add("x", "http://host/x", ["simplest"])
    with pytest.raises(subscriptions.SubscriptionError, match="exists already"):
        subscriptions.add("x", "http://host/y", ["simplest"])
