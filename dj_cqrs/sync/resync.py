"""Re-publish master rows as SYNC messages, in batches (``cqrs_sync``, ``cqrs_diff_sync``, admin).

Each batch is one query (keyset pagination, through ``relate_cqrs_serialization``), its rows are
serialized by the message code (:func:`dj_cqrs.master.serializers.serialize` and
:func:`~dj_cqrs.master.payloads.build_payload`, the same body ``Model.cqrs_sync()`` sends) and
published together with :func:`dj_cqrs.master.publisher.publish`. Rows are never re-read one by
one. A row whose serialization fails is reported and counted; a publish that fails raises
:class:`~dj_cqrs.exceptions.PublishFailed` after the rows already confirmed were counted. A
database outage (:func:`dj_cqrs.database.is_outage`) is waited out: the batch is read or serialized
again once the database is back.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from django.db import models

from dj_cqrs.constants import SignalType
from dj_cqrs.core.payload import TransportPayload
from dj_cqrs.database import call_through_outages, is_outage
from dj_cqrs.exceptions import PublishFailed
from dj_cqrs.master import hooks, publisher, serializers, tracking
from dj_cqrs.master.payloads import build_payload
from dj_cqrs.sync import keyset

logger = logging.getLogger("django-cqrs.sync")

#: ``on_error(pk, reason)``
ErrorCallback = Callable[[Any, str], None]


@dataclasses.dataclass
class SyncReport:
    #: Rows published.
    synced: int = 0
    #: Rows not published because ``CQRS_PRODUCE`` is off or ``is_sync_instance()`` is False.
    filtered: int = 0
    #: Rows whose serialization failed, or that were in a batch whose publish failed.
    failed: int = 0

    @property
    def processed(self) -> int:
        return self.synced + self.filtered + self.failed

    def add(self, other: SyncReport) -> None:
        self.synced += other.synced
        self.filtered += other.filtered
        self.failed += other.failed


def sync_payloads(
    model: Any, instances: Iterable[models.Model], queue: str | None = None, on_error: ErrorCallback | None = None
) -> tuple[list[TransportPayload], SyncReport]:
    """SYNC payloads for already fetched ``instances`` (no query), and the counts."""
    report = SyncReport()
    payloads: list[TransportPayload] = []
    produce = bool(getattr(model, "CQRS_PRODUCE", True))
    own_previous = hooks.overrides(model, "get_tracked_fields_data")
    previous: dict[str, Any] | None = {} if tracking.tracked_fields(model) else None
    for instance in instances:
        try:
            if not (produce and instance.is_sync_instance()):  # type: ignore[attr-defined]
                report.filtered += 1
                continue
            data = serializers.serialize(instance, sync=True)
            sent_previous = (
                instance.get_tracked_fields_data()  # type: ignore[attr-defined]
                if own_previous
                else None if previous is None else dict(previous)
            )
            payloads.append(
                build_payload(model, SignalType.SYNC, instance, data, instance.pk, sent_previous, queue=queue)
            )
        except Exception as exc:  # noqa: BLE001 - a user hook failing on one row must not stop the run
            if is_outage(exc):
                raise  # not the row's fault: the batch is serialized again once the database is back
            report.failed += 1
            if on_error is not None:
                on_error(instance.pk, f"{type(exc).__name__}: {exc}")
    return payloads, report


def publish_batch(
    model: Any, instances: Sequence[models.Model], queue: str | None = None, on_error: ErrorCallback | None = None
) -> SyncReport:
    """Serialize and publish one batch; raise :class:`PublishFailed` if the broker refuses it.

    A model that overrides ``cqrs_sync()`` gets it called for each row instead (as django-cqrs's
    commands do): a row it returns False for counts as filtered, one it raises for as failed."""
    if hooks.overrides(model, "cqrs_sync"):
        return sync_each(instances, queue, on_error)
    payloads, report = sync_payloads(model, instances, queue, on_error)
    if payloads:
        publisher.publish(payloads)
    report.synced = len(payloads)
    return report


def sync_each(
    instances: Iterable[models.Model], queue: str | None = None, on_error: ErrorCallback | None = None
) -> SyncReport:
    """Call each instance's ``cqrs_sync(queue=queue)``."""
    report = SyncReport()
    for instance in instances:
        try:
            sent = instance.cqrs_sync(queue=queue)  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - a user hook failing on one row must not stop the run
            if is_outage(exc):
                raise  # not the row's fault: the batch is synced again (a SYNC sent twice is harmless)
            report.failed += 1
            if on_error is not None:
                on_error(instance.pk, f"{type(exc).__name__}: {exc}")
            continue
        if sent:
            report.synced += 1
        else:
            report.filtered += 1
    return report


def _publish_through_outages(
    model: Any, rows: Sequence[models.Model], queue: str | None, on_error: ErrorCallback | None, using: str
) -> SyncReport:
    """:func:`publish_batch`, serialized again after a database outage (nothing of the batch is
    published before every row is serialized)."""
    return call_through_outages(
        lambda: publish_batch(model, rows, queue, on_error), what=f"database {using!r}", using=using, log=logger
    )


def sync_queryset(
    model: Any,
    queryset: models.QuerySet[Any],
    *,
    queue: str | None = None,
    batch_size: int = 10000,
    on_error: ErrorCallback | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> SyncReport:
    """Publish every row of ``queryset`` as a SYNC (to ``queue`` only, when given)."""
    report = SyncReport()
    qs = model.relate_cqrs_serialization(queryset)
    for rows in keyset.pk_batches(qs, batch_size):
        try:
            report.add(_publish_through_outages(model, rows, queue, on_error, qs.db))
        except PublishFailed as exc:
            raise SyncAborted(report, len(rows), exc) from exc
        if on_progress is not None:
            on_progress(len(rows))
    return report


def sync_pks(
    model: Any,
    pks: Sequence[Any],
    *,
    queue: str | None = None,
    batch_size: int = 10000,
    on_error: ErrorCallback | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> SyncReport:
    """Publish the rows with these primary keys (one query per ``batch_size`` keys)."""
    report = SyncReport()
    manager = model._default_manager
    for start in range(0, len(pks), batch_size):
        chunk = list(pks[start : start + batch_size])
        qs = model.relate_cqrs_serialization(manager.filter(pk__in=chunk).order_by("pk"))
        rows = keyset.fetch_with_reconnect(keyset.lister(qs), qs.db)
        try:
            report.add(_publish_through_outages(model, rows, queue, on_error, qs.db))
        except PublishFailed as exc:
            raise SyncAborted(report, len(rows), exc) from exc
        if on_progress is not None:
            on_progress(len(chunk))
    return report


class SyncAborted(PublishFailed):
    """Publishing stopped: ``report`` counts what was published before; ``lost`` rows were not."""

    def __init__(self, report: SyncReport, lost: int, cause: BaseException) -> None:
        super().__init__(f"publishing stopped after {report.synced} row(s): {cause}")
        self.report = report
        self.lost = lost
