"""What the console drives: the replica's consumer process, the broker switch, the services' APIs.

``examples/demo_web.py`` builds one :class:`Runtime` and :func:`install`\\ s it before serving;
the views get it with :func:`current`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .proxy import TcpProxy


class ServiceDown(Exception):
    """A service's API did not answer; the message says which and why."""


class Api:
    """The JSON API of one service on 127.0.0.1."""

    def __init__(self, name: str, base_url: str) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")

    def call(
        self, path: str, data: dict[str, Any] | None = None, timeout: float = 30
    ) -> tuple[int, dict[str, Any]]:
        """``(HTTP status, JSON object)``: a GET, or a POST of ``data`` as JSON."""
        body = None if data is None else json.dumps(data).encode()
        request = urllib.request.Request(
            self.base_url + path, data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - 127.0.0.1
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, json.loads(exc.read())
            except ValueError:
                return exc.code, {"error": f"the {self.name} service answered HTTP {exc.code}"}
        except (OSError, ValueError) as exc:
            raise ServiceDown(f"the {self.name} service does not answer: {exc}") from exc


class BrokerSwitch:
    """Cuts the broker off the services and restores it: a flag file the master's transport
    checks (``filesystem://``), or a TCP proxy both services connect through (any other broker)."""

    def __init__(self, flag: Path | None = None, proxy: TcpProxy | None = None) -> None:
        self.flag = flag
        self.proxy = proxy

    @property
    def cut(self) -> bool:
        if self.proxy is not None:
            return self.proxy.is_cut
        return self.flag is not None and self.flag.exists()

    @property
    def how(self) -> str:
        if self.proxy is not None:
            return "connections through the demo's TCP proxy are closed and refused"
        return "the master's publishes fail, as with the broker down"

    def set(self, cut: bool) -> None:
        if self.proxy is not None:
            (self.proxy.cut if cut else self.proxy.restore)()
        elif self.flag is not None:
            if cut:
                self.flag.touch()
            else:
                with contextlib.suppress(FileNotFoundError):
                    self.flag.unlink()


class ManagedProcess:
    """A ``manage.py`` command of a service, running in its own session, logging to a file."""

    def __init__(
        self, label: str, command: list[str], cwd: Path, env: dict[str, str], log: Path
    ) -> None:
        self.label = label
        self.command = command
        self.cwd = cwd
        self.env = env
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at: float | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        if self.running:
            return
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started_at = time.time()

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM (a graceful stop, as a process manager would ask), then SIGKILL if need be."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # its workers too
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)
        self.process = None


class Runtime:
    def __init__(
        self,
        *,
        master: Api,
        replica: Api,
        consumer: ManagedProcess,
        switch: BrokerSwitch,
        flush_outbox: Callable[[], None],
        facts: dict[str, str],
    ) -> None:
        self.master = master
        self.replica = replica
        self.consumer = consumer
        self.switch = switch
        self.flush_outbox = flush_outbox
        self.facts = facts
        #: Serialises the switches (two clicks at once must not start two consumers).
        self.lock = threading.Lock()

    def set_consumer(self, running: bool) -> None:
        with self.lock:
            if running:
                self.consumer.start()
            else:
                self.consumer.stop()

    def set_broker(self, cut: bool) -> None:
        with self.lock:
            self.switch.set(cut)
            if not cut:
                # The relay retries with back-off while the broker is away; publish what the
                # outbox kept at once rather than at its next attempt.
                self.flush_outbox()


_current: Runtime | None = None


def install(runtime: Runtime) -> None:
    global _current
    _current = runtime


def current() -> Runtime:
    if _current is None:
        raise RuntimeError("web_console.runtime.install() was not called: run examples/demo_web.py")
    return _current
