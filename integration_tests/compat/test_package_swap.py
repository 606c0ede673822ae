"""A team swaps packages on running services.

* In place: django-cqrs 3.1.0 → dj_cqrs → django-cqrs 3.1.0, on the same databases, exchange and
  replica queue. The team's apps need no migration at any step (dj_cqrs only adds its own
  tables with ``migrate``), revisions continue where the other package
  left them, and messages queued while the replica was down (in the queue the other package
  declared) are applied.
* Rolling: during the upgrade of a replica service, consumers of both packages share its queue
  and database; retries bounce between them and a message is dead-lettered exactly once.
"""

from __future__ import annotations

from typing import Any

import pytest

from integration_tests.compat.flows import start_consumer, wait_converged
from integration_tests.compat.wire import consumer_count, message_count, take
from integration_tests.conftest import make_fleet
from integration_tests.harness import Service, log_text, stop_process, wait_until

pytestmark = pytest.mark.compat

TAG = "0b0c3f5e-1d4a-4f57-9a52-1f0b3c6b8a10"


def swapped(service: Service, python: str) -> Service:
    """The same service (same environment: database, exchange, queue) run by another Python."""
    other = Service(service.role, python, {})
    other.env = dict(service.env)
    return other


def no_pending_migrations(*services: Service) -> None:
    """The database the other package migrated is fully migrated for this one too (models vs
    migrations is ``test_migrations.py``)."""
    for service in services:
        service.manage("migrate", "--check")  # exits 1 when a migration is unapplied


def upgrade_to_dj_cqrs(*services: Service) -> None:
    """The upgrade step of docs/upgrading.md: the team's own apps need no migration (``catalog`` is
    fully migrated as django-cqrs left it); ``migrate`` then only adds dj_cqrs's tables (outbox,
    tombstones) and, in these test services, the dj_cqrs-only trigger app."""
    for service in services:
        service.manage("migrate", "catalog", "--check")
        service.manage("migrate", "-v", "0")
        service.manage("migrate", "--check")


def publish_while_replica_down(master: Service, replica: Service, queue: str, steps: list[dict[str, Any]], *consume_args: str) -> dict[str, Any]:
    expected = master.scenario(steps)
    consumer = start_consumer(replica, queue, *consume_args)
    try:
        wait_converged(replica, expected, 60, f"replica on {replica.python} caught up")
    finally:
        assert stop_process(consumer) == 0
    return expected


def test_swap_packages_in_place(rabbitmq, postgres, our_python, compat_python):
    fleets = make_fleet(compat_python, compat_python)
    fleet = next(fleets)
    services: list[Service] = []
    try:
        # 1. Everything on django-cqrs: it migrates the databases and declares the queue.
        consumer = start_consumer(fleet.replica, fleet.queue)
        first = fleet.master.scenario(
            [{"op": "create", "id": i, "fields": {"name": f"p{i} ☕/", "price": f"{i}.25", "category": i}} for i in (1, 2, 3)]
            + [
                {"op": "create", "model": "tag", "id": TAG, "fields": {"label": "uuid pk"}},
                {"op": "create", "model": "note", "id": 1, "fields": {"text": "note"}},
            ]
        )
        wait_converged(fleet.replica, first, 60, "django-cqrs fleet converged")
        stop_process(consumer)

        # 2. Both services on dj_cqrs, same databases and queue.
        master, replica = swapped(fleet.master, our_python), swapped(fleet.replica, our_python)
        services += [master, replica]
        upgrade_to_dj_cqrs(master, replica)
        second = publish_while_replica_down(
            master,
            replica,
            fleet.queue,
            [
                {"op": "update", "id": 1, "fields": {"name": "updated by dj_cqrs", "category": None}},
                {"op": "delete", "id": 2},
                {"op": "create", "id": 4, "fields": {"name": "created by dj_cqrs", "price": "0.5"}},
                {"op": "update", "model": "tag", "id": TAG, "fields": {"label": "tag ✓"}},
                {"op": "update", "model": "note", "id": 1, "fields": {"text": "note 2"}},
            ],
            "-w",
            "2",
        )
        assert second["it_product"]["1"]["cqrs_revision"] == 1  # continues from django-cqrs's 0

        # 3. Back to django-cqrs: nothing dj_cqrs left behind (tables, queue, bindings) is in the way.
        master, replica = swapped(fleet.master, compat_python), swapped(fleet.replica, compat_python)
        services += [master, replica]
        no_pending_migrations(master, replica)
        third = publish_while_replica_down(
            master,
            replica,
            fleet.queue,
            [
                {"op": "update", "id": 1, "fields": {"name": "back on django-cqrs"}},
                {"op": "update", "model": "tag", "id": TAG, "fields": {"label": "tag ✓✓"}},
                {"op": "delete", "id": 3},
            ],
        )
        assert third["it_product"]["1"]["cqrs_revision"] == 2
    finally:
        for service in services:
            service.stop_all()
        next(fleets, None)


def test_rolling_upgrade_consumers_of_both_packages_share_a_queue(rabbitmq, postgres, our_python, compat_python):
    fleets = make_fleet(our_python, compat_python, {"IT_CQRS_MAX_RETRIES": "2"})
    fleet = next(fleets)
    ours = swapped(fleet.replica, our_python)
    try:
        theirs_consumer = start_consumer(fleet.replica, fleet.queue)
        ours_consumer = start_consumer(ours, fleet.queue, "-w", "2")
        wait_until(lambda: consumer_count(fleet.queue) >= 2, 30, message="both packages consuming")

        # Creates only (distinct rows): no two messages of one row race between consumers.
        expected = fleet.master.scenario(
            [{"op": "create", "id": i, "fields": {"name": f"rolling {i} ☕/", "price": f"{i}.5", "category": i % 3 or None}} for i in range(1, 41)]
            + [{"op": "create", "model": "note", "id": 9, "fields": {"text": "fail: retried by both packages"}}]
        )
        expected["it_note"] = {}  # the note fails on every replica and ends as a dead letter
        wait_converged(fleet.replica, expected, 60, "replica converged with consumers of both packages")

        (dead,) = take(f"dead_letter_{fleet.queue}", 1, timeout=60)
        assert dead.body["instance_pk"] == 9 and dead.body["retries"] == 2
        assert dead.body["meta"] == {"origin": "it-master ☕/", "model": "Note"}
        # Exactly one dead letter: the last retry went to the queue, not to both packages.
        assert message_count(f"dead_letter_{fleet.queue}") == 0
        assert message_count(fleet.queue) == 0
        assert theirs_consumer.poll() is None, log_text(theirs_consumer)
        assert ours_consumer.poll() is None, log_text(ours_consumer)
    finally:
        ours.stop_all()
        next(fleets, None)
