"""The admin's dead-letter page on real brokers (RabbitMQ, and kombu on Redis): letters dead-lettered
by a real consumer are browsed with their reason headers (without being consumed), one is
replayed and applied by the consumer, the rest purged after the confirmation page."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.test import Client, override_settings

from integration_tests.failure_helpers import body, declare, run_consumer
from integration_tests.test_failure_handling import (
    backend,  # noqa: F401 - the fixture (RabbitMQ, kombu)
)

pytestmark = pytest.mark.django_db(transaction=True)

DEAD = "/admin/dj_cqrs/tombstone/dead-letters/"


def _operator() -> Client:
    user = User.objects.create_user("ops", password="x", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            codename__in=["view_tombstone", "change_tombstone", "delete_tombstone"]
        )
    )
    client = Client()
    client.force_login(user)
    return client


def test_dead_letter_page_browse_replay_purge(backend):  # noqa: F811 - the imported fixture
    from dj_cqrs.ops import status
    from dj_cqrs.ops.dead_letter_admin import digest
    from dj_cqrs.replica import dead_letters
    from dj_cqrs.transport import get_transport
    from tests.apps.replica_app.models import FlakyModelRef

    FlakyModelRef.fail_times = 10**6
    with override_settings(CQRS=backend.settings(CQRS_MAX_RETRIES=0)):
        declare()
        backend.publish(body("simplest_flaky", 7, data={"name": "seven"}))
        backend.publish(body("simplest_flaky", 8, data={"name": "eight"}))
        consumer = run_consumer(max_messages=2, timeout=30)
        assert not consumer.timed_out
        store = dead_letters.store_for(get_transport())
        assert store.count() == 2
        # cqrs_status's figures on this broker
        result = status.collect(status.Thresholds(max_dead_letters=1), master=False)
        assert result.replica is not None and result.replica.dead_letters == 2
        assert result.replica.queue.exists and result.replica.queue.ready == 0
        assert [b.threshold for b in result.breaches] == [
            "max_dead_letters"
        ] and result.exit_code == 1

        client = _operator()
        page = client.get(DEAD).content.decode()
        assert f"2 letters in <code>{backend.dlq}</code>" in page
        assert "<td>simplest_flaky</td><td>7</td><td>0</td><td>max_retries</td>" in page
        assert "<code>x-cqrs-error</code>: RuntimeError: flaky failure" in page
        assert "<code>x-cqrs-exception</code>: builtins.RuntimeError" in page
        assert client.get(DEAD + "?reason=max_retries").content.decode().count('name="letter"') == 2
        assert store.count() == 2  # browsing gives every letter back

        FlakyModelRef.fail_times = 0
        seven = next(
            dead_letters.browse(
                store, where=lambda letter: (letter.data or {}).get("instance_pk") == 7
            )
        )
        response = client.post(
            DEAD, {"action": "replay_selected", "letter": [digest(seven)]}, follow=True
        )
        assert "Replayed 1 dead letter (1 selected)" in response.content.decode()
        assert store.count() == 1
        run_consumer(max_messages=1, timeout=30)
        assert FlakyModelRef.objects.get(pk=7).name == "seven"

        assert "Are you sure?" in client.post(DEAD, {"action": "purge_all"}).content.decode()
        assert store.count() == 1
        response = client.post(DEAD, {"action": "purge_all", "confirm": "yes"}, follow=True)
        assert "Purged 1 dead letter (all)" in response.content.decode()
        assert store.count() == 0
        assert not FlakyModelRef.objects.filter(pk=8).exists()
        assert [e.change_message.split(" (")[0] for e in LogEntry.objects.order_by("id")] == [
            "Dead letters: Replayed 1 dead letter",
            "Dead letters: Purged 1 dead letter",
        ]
