"""Prometheus metrics (the optional ``[metrics]`` extra, prometheus-client).

The hot paths (the master's publisher, the relay, the consume loops) call
``recorder().published(...)``, ``recorder().batch(...)`` ...; until metrics are enabled
(``CQRS["metrics"] = True``, or ``cqrs_consume``/``cqrs_relay --metrics-port``, which set
:data:`ENABLE_ENV` for their workers) :func:`recorder` returns the no-op :class:`Recorder`, and
prometheus-client is never imported. Enabled without prometheus-client installed: one WARNING,
then no-ops.

Several processes (``cqrs_consume -w N``, gunicorn workers) aggregate through prometheus-client's
multiprocess mode: with ``PROMETHEUS_MULTIPROC_DIR`` set, every process writes its values to
files there and :func:`exposition` reads them all (``MultiProcessCollector``). ``cqrs_consume``
creates and removes such a directory itself (:func:`multiprocess_dir`). ``docs/operations.md``
lists the metrics.
"""

from __future__ import annotations

from dj_cqrs.metrics.exposition import (
    MetricsServer,
    OutboxCollector,
    exposition,
    make_server,
    mark_process_dead,
    multiprocess_dir,
)
from dj_cqrs.metrics.recording import (
    ENABLE_ENV,
    MULTIPROC_ENV,
    NOOP,
    PrometheusRecorder,
    Recorder,
    available,
    enable_for_processes,
    recorder,
    reset,
)

__all__ = [
    "ENABLE_ENV",
    "MULTIPROC_ENV",
    "NOOP",
    "MetricsServer",
    "OutboxCollector",
    "PrometheusRecorder",
    "Recorder",
    "available",
    "enable_for_processes",
    "exposition",
    "make_server",
    "mark_process_dead",
    "multiprocess_dir",
    "recorder",
    "reset",
]
