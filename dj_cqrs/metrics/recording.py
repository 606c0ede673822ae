"""The recorders the hot paths call: the no-op :class:`Recorder` until metrics are enabled, then
the :class:`PrometheusRecorder` of the process (see :mod:`dj_cqrs.metrics`)."""

from __future__ import annotations

import bisect
import collections
import datetime
import logging
import math
import os
import threading
from collections.abc import Collection, Sequence
from typing import Any

from django.core.signals import setting_changed

from dj_cqrs.conf import cqrs_settings
from dj_cqrs.core.event import EventPayload
from dj_cqrs.core.messages import Action, Outcome
from dj_cqrs.core.reasons import Reason, Status

logger = logging.getLogger("django-cqrs.metrics")

#: Set to "1" by the commands serving metrics: their worker processes record too.
ENABLE_ENV = "DJ_CQRS_METRICS"
#: prometheus-client's multiprocess directory.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: The ``cqrs_id`` label of a message whose CQRS_ID this service does not know (bounded labels).
UNKNOWN = "unknown"

BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
APPLY_SECONDS_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
LAG_SECONDS_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)

#: The ``reason`` label of ``cqrs_messages_ignored_total`` for each acknowledged status.
IGNORED_REASONS: dict[str, str] = {
    Status.IGNORED_STALE: "stale",
    Status.IGNORED_DUPLICATE: "duplicate",
    Status.IGNORED_DELETED: "deleted",
    Status.IGNORED_STALE_DELETE: "stale_delete",
    Status.IGNORED_BROADCAST_SYNC: "broadcast_sync",
    Status.NO_HANDLER: "no_handler",
}
_REASONS = frozenset(r.value for r in Reason)


class Recorder:
    """What the hot paths call; every method does nothing (metrics disabled)."""

    enabled = False

    def published(self, payloads: Sequence[Any]) -> None:
        """``payloads`` were handed to (and confirmed by) the broker."""

    def publish_failed(self, payloads: Sequence[Any]) -> None:
        """Publishing ``payloads`` failed (they stay in the outbox, or the caller gets
        ``PublishFailed``)."""

    def batch(self, outcomes: Sequence[Outcome], seconds: float, known: Collection[str]) -> None:
        """A consumed batch and the outcome of each message; ``known``: the CQRS_IDs used as
        label values as they are (others count as ``unknown``)."""

    def dead_letter(self, outcome: Outcome, known: Collection[str]) -> None:
        """A dead letter outside a batch's outcomes (a successor that could not be published)."""

    def worker_started(self) -> None:
        """A consumer worker process runs (``cqrs_consumer_workers``)."""


NOOP = Recorder()


def cqrs_id_label(payload: Any, raw: str, known: Collection[str]) -> str:
    """A bounded ``cqrs_id`` label: a CQRS_ID this service has, a domain event's routing key
    (event names are the emitters' code), else ``unknown``."""
    if isinstance(payload, EventPayload):
        return str(payload.cqrs_id)
    cqrs_id = payload.cqrs_id if payload is not None else raw
    return cqrs_id if cqrs_id in known else UNKNOWN


def _updated_at(payload: Any) -> datetime.datetime | None:
    data = getattr(payload, "instance_data", None)
    value = data.get("cqrs_updated") if isinstance(data, dict) else None
    if isinstance(value, datetime.datetime):
        return value
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=datetime.timezone.utc)


class PrometheusRecorder(Recorder):
    """Records into prometheus-client metrics (in ``registry``; ``None`` in multiprocess mode,
    where the values go to files and :func:`exposition` collects them)."""

    enabled = True

    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.registry = registry
        kw: dict[str, Any] = {"registry": registry}
        self.published_total = Counter(
            "cqrs_published", "Messages published to the broker.", ["cqrs_id"], **kw
        )
        self.publish_failures_total = Counter(
            "cqrs_publish_failures",
            "Messages whose publication failed (they stay in the outbox).",
            ["cqrs_id"],
            **kw,
        )
        self.applied_total = Counter(
            "cqrs_messages_applied", "Messages applied by the replica.", ["cqrs_id"], **kw
        )
        self.ignored_total = Counter(
            "cqrs_messages_ignored",
            "Messages acknowledged without a change.",
            ["cqrs_id", "reason"],
            **kw,
        )
        self.retried_total = Counter(
            "cqrs_messages_retried", "Retry attempts scheduled.", ["cqrs_id", "reason"], **kw
        )
        self.dead_letters_total = Counter(
            "cqrs_dead_letters",
            "Messages dead-lettered (malformed ones included).",
            ["cqrs_id", "reason"],
            **kw,
        )
        self.batch_size = Histogram(
            "cqrs_batch_size", "Messages per consumed batch.", buckets=BATCH_SIZE_BUCKETS, **kw
        )
        self.apply_seconds = Histogram(
            "cqrs_apply_seconds",
            "Seconds to decide and apply a consumed batch.",
            buckets=APPLY_SECONDS_BUCKETS,
            **kw,
        )
        self.lag_seconds = Histogram(
            "cqrs_replica_lag_seconds",
            "Seconds from the master's cqrs_updated to the replica's apply.",
            ["cqrs_id"],
            buckets=LAG_SECONDS_BUCKETS,
            **kw,
        )
        self.workers = Gauge(
            "cqrs_consumer_workers",
            "Consumer worker processes running.",
            multiprocess_mode="livesum",
            **kw,
        )

    def published(self, payloads: Sequence[Any]) -> None:
        for cqrs_id, count in collections.Counter(p.cqrs_id for p in payloads).items():
            self.published_total.labels(cqrs_id).inc(count)

    def publish_failed(self, payloads: Sequence[Any]) -> None:
        for cqrs_id, count in collections.Counter(p.cqrs_id for p in payloads).items():
            self.publish_failures_total.labels(cqrs_id).inc(count)

    def batch(self, outcomes: Sequence[Outcome], seconds: float, known: Collection[str]) -> None:
        """Count a batch's outcomes: the counters are added to once per label set and batch, and
        the lags of a CQRS_ID go into its histogram together (see :func:`observe_many`)."""
        if not outcomes:
            return
        self.batch_size.observe(len(outcomes))
        self.apply_seconds.observe(seconds)
        now = datetime.datetime.now(datetime.timezone.utc)
        applied: collections.Counter[str] = collections.Counter()
        ignored: collections.Counter[tuple[str, str]] = collections.Counter()
        retried: collections.Counter[tuple[str, str]] = collections.Counter()
        dead: collections.Counter[tuple[str, str]] = collections.Counter()
        lags: dict[str, list[float]] = {}
        for outcome in outcomes:
            label = cqrs_id_label(outcome.payload, outcome.raw_cqrs_id, known)
            if outcome.action is Action.ACK:
                if outcome.status == Status.APPLIED:
                    applied[label] += 1
                    updated = _updated_at(outcome.payload)
                    if updated is not None:
                        lags.setdefault(label, []).append(max(0.0, (now - updated).total_seconds()))
                else:
                    ignored[label, IGNORED_REASONS.get(outcome.status, "other")] += 1
            elif outcome.action is Action.RETRY:
                retried[label, _reason(outcome.reason)] += 1
            elif outcome.action is Action.DEAD_LETTER:
                dead[label, _reason(outcome.reason)] += 1
        for label, count in applied.items():
            self.applied_total.labels(label).inc(count)
        for counter, counts in (
            (self.ignored_total, ignored),
            (self.retried_total, retried),
            (self.dead_letters_total, dead),
        ):
            for labels, count in counts.items():
                counter.labels(*labels).inc(count)
        for label, values in lags.items():
            observe_many(self.lag_seconds.labels(label), values)

    def dead_letter(self, outcome: Outcome, known: Collection[str]) -> None:
        label = cqrs_id_label(outcome.payload, outcome.raw_cqrs_id, known)
        self.dead_letters_total.labels(label, _reason(outcome.reason)).inc()

    def worker_started(self) -> None:
        self.workers.set(1)


def observe_many(histogram: Any, values: Sequence[float]) -> None:
    """``histogram.observe(v)`` for each of ``values``, with one write per bucket touched and one
    to the sum (each ``observe`` writes twice: in multi-process mode, to a memory-mapped file).

    It uses the bucket values of prometheus-client's histogram child (``_upper_bounds``,
    ``_buckets``, ``_sum``: per-bucket, not cumulative, counts; stable since 0.4); a child
    without them (another version) gets plain ``observe`` calls."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for value in values:
            histogram.observe(value)
        return
    counts: collections.Counter[int] = collections.Counter(
        bisect.bisect_left(bounds, value) for value in values
    )
    total.inc(math.fsum(values))
    for index, count in counts.items():
        buckets[index].inc(count)


def _reason(reason: str) -> str:
    return str.__str__(reason) if reason in _REASONS else "other"


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        #: The resolved recorder (None: resolve at the next call).
        self.recorder: Recorder | None = None
        #: The one PrometheusRecorder of this process, once created (metrics register once).
        self.prometheus: PrometheusRecorder | None = None
        self.warned = False


_state = _State()


def recorder() -> Recorder:
    """The recorder of this process: the no-op one unless metrics are enabled."""
    current = _state.recorder
    return current if current is not None else _resolve()


def _wanted() -> bool:
    return bool(cqrs_settings.metrics) or os.environ.get(ENABLE_ENV) == "1"


def _resolve() -> Recorder:
    with _state.lock:
        if _state.recorder is None:
            _state.recorder = _prometheus_recorder() if _wanted() else NOOP
        return _state.recorder


def available() -> bool:
    """Whether prometheus-client can be imported."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return False
    return True


def _prometheus_recorder() -> Recorder:
    if _state.prometheus is not None:
        return _state.prometheus
    if not available():
        if not _state.warned:
            _state.warned = True
            logger.warning(
                "CQRS metrics are enabled but prometheus-client is not installed (pip install 'dj-cqrs[metrics]')"
            )
        return NOOP
    from prometheus_client import CollectorRegistry, values

    if os.environ.get(MULTIPROC_ENV):
        # prometheus-client picks its value class when first imported; a process that imported it
        # before the directory was set (e.g. an app's own metrics) must write to files too.
        if not getattr(values.ValueClass, "_multiprocess", False):
            values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
        _state.prometheus = PrometheusRecorder(None)
    else:
        _state.prometheus = PrometheusRecorder(CollectorRegistry(auto_describe=True))
    return _state.prometheus


def enable_for_processes() -> None:
    """Enable metrics in this process and in the processes it starts (the commands' workers)."""
    os.environ[ENABLE_ENV] = "1"
    reset()


def reset() -> None:
    """Resolve the recorder again at the next call (settings changed; tests)."""
    with _state.lock:
        _state.recorder = None


def _reset_on_change(*, setting: str, **kwargs: Any) -> None:
    if setting == "CQRS":
        reset()


setting_changed.connect(_reset_on_change, dispatch_uid="dj_cqrs.metrics.reset")


__all__ = [
    "ENABLE_ENV",
    "MULTIPROC_ENV",
    "NOOP",
    "PrometheusRecorder",
    "Recorder",
    "available",
    "enable_for_processes",
    "recorder",
    "reset",
]
