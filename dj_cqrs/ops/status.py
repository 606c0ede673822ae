"""The state of this service's CQRS plumbing, and whether it is healthy (``manage.py cqrs_status``,
:mod:`dj_cqrs.ops.health`).

Master side, per database with the outbox table and per CQRS_ID: the events not yet published
(``pending``), the age of the oldest of them, and how many of them failed at least once
(``failed``, with the last error). Replica side (a service with ``CQRS['queue']``): the replica
queue's ready and unacknowledged messages, consumers and estimated lag, and the dead letters
(see :mod:`dj_cqrs.ops.broker`).

Thresholds come from ``CQRS['status']`` and may be overridden per call; each one crossed is a
:class:`Breach`. :attr:`Status.exit_code` is the command's exit code:

* ``0`` healthy;
* ``1`` a threshold is crossed (or the replica queue does not exist);
* ``3`` the broker cannot be reached;
* ``4`` a database cannot be reached.

When several apply, the highest wins. (``2`` is a usage error: bad options or settings.)
"""

from __future__ import annotations

import dataclasses
from typing import Any

from django.db import router
from django.db.models import Count, Min, Q
from django.utils import timezone

from dj_cqrs.conf import cqrs_settings
from dj_cqrs.exceptions import ConnectionFailed
from dj_cqrs.master.outbox.store import outbox_model
from dj_cqrs.master.relay import outbox_databases
from dj_cqrs.ops.broker import BrokerStats, queue_stats
from dj_cqrs.registry import master_registry
from dj_cqrs.transport import get_transport

OK = 0
UNHEALTHY = 1
USAGE = 2
BROKER_UNREACHABLE = 3
DATABASE_UNREACHABLE = 4

#: The thresholds, by their name in ``CQRS['status']``.
THRESHOLDS = ("max_outbox_age", "max_outbox_pending", "max_lag", "max_dead_letters")

_UNSET: Any = object()


@dataclasses.dataclass(frozen=True)
class Thresholds:
    max_outbox_age: float | None = None
    max_outbox_pending: int | None = None
    max_lag: float | None = None
    max_dead_letters: int | None = None

    @classmethod
    def from_settings(cls, **overrides: Any) -> Thresholds:
        """``CQRS['status']``, with the given values (not None) instead."""
        values = {name: getattr(cqrs_settings.status, name) for name in THRESHOLDS}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


@dataclasses.dataclass
class OutboxStatus:
    database: str
    cqrs_id: str
    pending: int = 0
    #: Seconds since the oldest pending event was recorded (None: nothing pending).
    oldest_pending_age: float | None = None
    #: Pending events whose publication failed at least once.
    failed: int = 0
    last_error: str = ""


@dataclasses.dataclass
class Breach:
    threshold: str
    subject: str
    value: float | None
    limit: float | None
    message: str


@dataclasses.dataclass
class Unreachable:
    component: str  # "broker" or "database"
    name: str
    error: str


@dataclasses.dataclass
class Status:
    thresholds: Thresholds
    outbox: list[OutboxStatus] = dataclasses.field(default_factory=list)
    replica: BrokerStats | None = None
    breaches: list[Breach] = dataclasses.field(default_factory=list)
    unreachable: list[Unreachable] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def exit_code(self) -> int:
        codes = [OK]
        if self.breaches:
            codes.append(UNHEALTHY)
        for item in self.unreachable:
            codes.append(BROKER_UNREACHABLE if item.component == "broker" else DATABASE_UNREACHABLE)
        return max(codes)

    @property
    def healthy(self) -> bool:
        return self.exit_code == OK

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["healthy"] = self.healthy
        data["exit_code"] = self.exit_code
        return data


def _count(number: int | None, noun: str) -> str:
    """``1 event``, ``2 events``."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def collect(
    thresholds: Thresholds | None = None, *, master: bool = True, replica: bool = True
) -> Status:
    """Read the outbox and the broker and check the thresholds (see the module docstring)."""
    status = Status(thresholds or Thresholds.from_settings())
    if master:
        _collect_outbox(status)
    if replica and cqrs_settings.queue:
        try:
            status.replica = queue_stats(get_transport())
        except ConnectionFailed as exc:
            status.unreachable.append(Unreachable("broker", cqrs_settings.queue, str(exc)))
        else:
            status.notes.extend(status.replica.notes)
    _check(status)
    return status


def _collect_outbox(status: Status) -> None:
    unreachable: dict[str, BaseException] = {}
    aliases = outbox_databases(unreachable=unreachable)
    for alias, exc in unreachable.items():
        status.unreachable.append(Unreachable("database", alias, repr(exc)))
    model = outbox_model()
    now = timezone.now()
    for alias in aliases:
        found: dict[str, OutboxStatus] = {
            cqrs_id: OutboxStatus(alias, cqrs_id)
            for cqrs_id, master_model in sorted(master_registry.models.items())
            if router.db_for_write(master_model) == alias
        }
        try:
            rows = list(
                model.objects.using(alias)
                .filter(published_at__isnull=True)
                .values("cqrs_id")
                .annotate(
                    pending=Count("id"),
                    oldest=Min("created_at"),
                    failed=Count("id", filter=Q(attempts__gt=0)),
                )
                .order_by("cqrs_id")
            )
            for row in rows:
                item = found.setdefault(row["cqrs_id"], OutboxStatus(alias, row["cqrs_id"]))
                item.pending = row["pending"]
                item.oldest_pending_age = round((now - row["oldest"]).total_seconds(), 3)
                item.failed = row["failed"]
                if item.failed:
                    item.last_error = (
                        model.objects.using(alias)
                        .filter(published_at__isnull=True, cqrs_id=item.cqrs_id, attempts__gt=0)
                        .order_by("-id")
                        .values_list("last_error", flat=True)
                        .first()
                    ) or ""
        except Exception as exc:  # noqa: BLE001 - reported as the database's state
            status.unreachable.append(Unreachable("database", alias, repr(exc)))
            continue
        status.outbox.extend(sorted(found.values(), key=lambda s: s.cqrs_id))


def _check(status: Status) -> None:
    limits = status.thresholds
    breaches = status.breaches
    for item in status.outbox:
        subject = f"outbox {item.database}/{item.cqrs_id}"
        age = item.oldest_pending_age
        if limits.max_outbox_age is not None and age is not None and age > limits.max_outbox_age:
            breaches.append(
                Breach(
                    "max_outbox_age",
                    subject,
                    age,
                    limits.max_outbox_age,
                    f"{subject}: the oldest pending event is {age:.0f}s old (limit {limits.max_outbox_age}s)",
                )
            )
        if limits.max_outbox_pending is not None and item.pending > limits.max_outbox_pending:
            breaches.append(
                Breach(
                    "max_outbox_pending",
                    subject,
                    item.pending,
                    limits.max_outbox_pending,
                    f"{subject}: {_count(item.pending, 'event')} pending (limit {limits.max_outbox_pending})",
                )
            )
    stats = status.replica
    if stats is None:
        return
    queue = stats.queue
    subject = f"queue {queue.name}"
    if not queue.exists:
        breaches.append(
            Breach(
                "queue",
                subject,
                None,
                None,
                f"{subject} does not exist: no consumer ever declared it",
            )
        )
    elif limits.max_lag is not None:
        if queue.stalled:
            breaches.append(
                Breach(
                    "max_lag",
                    subject,
                    None,
                    limits.max_lag,
                    f"{subject}: {_count(queue.ready, 'message')} ready and none acknowledged lately",
                )
            )
        elif queue.lag is not None and queue.lag > limits.max_lag:
            breaches.append(
                Breach(
                    "max_lag",
                    subject,
                    queue.lag,
                    limits.max_lag,
                    f"{subject}: about {queue.lag:.0f}s behind (limit {limits.max_lag}s)",
                )
            )
        elif queue.lag is None:
            status.notes.append(f"{subject}: lag unknown, max_lag not checked")
    letters = stats.dead_letters
    if (
        limits.max_dead_letters is not None
        and letters is not None
        and letters > limits.max_dead_letters
    ):
        subject = f"dead letters {stats.dead_letter_queue}"
        breaches.append(
            Breach(
                "max_dead_letters",
                subject,
                letters,
                limits.max_dead_letters,
                f"{subject}: {letters} (limit {limits.max_dead_letters})",
            )
        )


def render(status: Status) -> str:
    """A plain-text report: one line per outbox CQRS_ID and for the replica queue."""
    lines: list[str] = []
    if status.outbox:
        lines.append("outbox (database, cqrs_id): pending, oldest pending age, failed")
        for item in status.outbox:
            age = "-" if item.oldest_pending_age is None else f"{item.oldest_pending_age:.1f}s"
            error = f"  last error: {item.last_error[:120]}" if item.last_error else ""
            lines.append(
                f"  {item.database}\t{item.cqrs_id}\t{item.pending}\t{age}\t{item.failed}{error}"
            )
    stats = status.replica
    if stats is not None:
        queue = stats.queue

        def show(value: Any) -> str:
            return "?" if value is None else str(value)

        lag = (
            "stalled"
            if queue.stalled
            else (show(queue.lag) + ("s" if queue.lag is not None else ""))
        )
        state = "" if queue.exists else " (missing)"
        lines.append("replica queue: ready, unacked, consumers, lag")
        lines.append(
            f"  {queue.name}{state}\t{show(queue.ready)}\t{show(queue.unacked)}\t{show(queue.consumers)}\t{lag}"
        )
        lines.append(f"dead letters ({stats.dead_letter_queue}): {show(stats.dead_letters)}")
    for down in status.unreachable:
        lines.append(f"UNREACHABLE {down.component} {down.name}: {down.error}")
    for breach in status.breaches:
        lines.append(f"UNHEALTHY {breach.message}")
    for note in status.notes:
        lines.append(f"note: {note}")
    lines.append("healthy" if status.healthy else f"exit code {status.exit_code}")
    return "\n".join(lines)


__all__ = [
    "BROKER_UNREACHABLE",
    "DATABASE_UNREACHABLE",
    "OK",
    "THRESHOLDS",
    "UNHEALTHY",
    "USAGE",
    "Breach",
    "OutboxStatus",
    "Status",
    "Thresholds",
    "Unreachable",
    "collect",
    "render",
]
