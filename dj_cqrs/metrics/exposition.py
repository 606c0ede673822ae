"""Serving the metrics: the Prometheus text of this process or of every process of a multiprocess
directory, the outbox gauges read when scraped, the HTTP server of ``--metrics-port``."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from dj_cqrs.metrics.recording import MULTIPROC_ENV, PrometheusRecorder, available, recorder

logger = logging.getLogger("django-cqrs.metrics")


def exposition(extra: Iterable[Any] = ()) -> tuple[bytes, str]:
    """The Prometheus text of this process's metrics, or of every process's with
    ``PROMETHEUS_MULTIPROC_DIR`` set, plus the ``extra`` collectors; ``(body, content type)``."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        from prometheus_client.multiprocess import MultiProcessCollector

        MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    else:
        own = recorder()
        if isinstance(own, PrometheusRecorder) and own.registry is not None:
            registry.register(own.registry)
    for collector in extra:
        registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST


class OutboxCollector:
    """``cqrs_outbox_pending`` and ``cqrs_outbox_oldest_pending_seconds`` per ``cqrs_id``,
    computed at scrape time by ``source()``: ``(cqrs_id, pending, oldest age in seconds)``."""

    def __init__(self, source: Callable[[], Iterable[tuple[str, int, float]]]) -> None:
        self.source = source

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        pending = GaugeMetricFamily(
            "cqrs_outbox_pending", "Unpublished outbox events.", labels=["cqrs_id"]
        )
        oldest = GaugeMetricFamily(
            "cqrs_outbox_oldest_pending_seconds",
            "Age of the oldest unpublished outbox event.",
            labels=["cqrs_id"],
        )
        for cqrs_id, count, age in self.source():
            pending.add_metric([cqrs_id], count)
            oldest.add_metric([cqrs_id], age)
        yield pending
        yield oldest


class MetricsServer:
    """Serves :func:`exposition` (plus ``extra`` collectors) at ``http://addr:port/metrics``.

    Bound when created (``OSError`` if the port is taken); served from a daemon thread after
    :meth:`start` (a supervisor starts it once its first workers are forked); :meth:`stop`."""

    def __init__(self, port: int, addr: str = "127.0.0.1", extra: Iterable[Any] = ()) -> None:
        self.server = make_server(port, addr, extra)
        self.thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> None:
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="dj_cqrs-metrics", daemon=True
        )
        self.thread.start()
        logger.info("CQRS metrics at http://%s:%s/metrics", *self.server.server_address[:2])

    def stop(self) -> None:
        if self.thread is not None:
            self.server.shutdown()
            self.thread.join(5)
        self.server.server_close()


def make_server(port: int, addr: str = "127.0.0.1", extra: Iterable[Any] = ()) -> Any:
    """A ``ThreadingHTTPServer`` answering ``GET /metrics``, bound but not serving yet."""
    import http.server

    collectors = list(extra)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            if self.path.split("?", 1)[0] not in ("/metrics", "/"):
                self.send_error(404)
                return
            try:
                body, content_type = exposition(collectors)
            except Exception as exc:  # noqa: BLE001 - a scrape error is answered, not fatal
                logger.exception("CQRS metrics exposition failed")
                self.send_error(500, explain=type(exc).__name__)
                return
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
            logger.debug("metrics %s - " + format, self.address_string(), *args)

    server = _server_class(addr)((addr, port), Handler)
    server.daemon_threads = True
    return server


def _server_class(addr: str) -> Any:
    """``ThreadingHTTPServer``, over IPv6 for an IPv6 address (``::`` binds every address, IPv4
    ones included where the system maps them); host names and IPv4 addresses stay on IPv4."""
    import http.server
    import ipaddress
    import socket

    try:
        version = ipaddress.ip_address(addr.split("%", 1)[0]).version
    except ValueError:  # a host name
        version = 4
    if version == 4:
        return http.server.ThreadingHTTPServer

    class IPv6Server(http.server.ThreadingHTTPServer):
        address_family = socket.AF_INET6

    return IPv6Server


@contextlib.contextmanager
def multiprocess_dir() -> Iterator[str]:
    """A fresh ``PROMETHEUS_MULTIPROC_DIR`` for this process and its workers (an existing one is
    used as it is, e.g. set by the deployment), removed at the end when created here."""
    existing = os.environ.get(MULTIPROC_ENV)
    if existing:
        os.makedirs(existing, exist_ok=True)
        yield existing
        return
    path = tempfile.mkdtemp(prefix="dj_cqrs-metrics-")
    os.environ[MULTIPROC_ENV] = path
    try:
        yield path
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(path, ignore_errors=True)


def mark_process_dead(pid: int) -> None:
    """A worker process ended: drop its live gauge files (multiprocess mode)."""
    path = os.environ.get(MULTIPROC_ENV)
    if not path or not available():
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


__all__ = [
    "MetricsServer",
    "OutboxCollector",
    "exposition",
    "make_server",
    "mark_process_dead",
    "multiprocess_dir",
]
