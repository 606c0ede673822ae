"""A supervisor of worker processes (``cqrs_consume`` runs one).

The supervisor starts ``workers`` processes (spawned: each runs ``target(*args)`` in a fresh
interpreter; or, with ``fork=True``, forked from the supervisor while that is safe), restarts any that dies (with back-off, so a crash loop does not spin), restarts them
all on a code change (``reload``) or SIGHUP, and on SIGTERM/SIGINT asks them to stop (SIGINT),
waits ``sigint_timeout`` seconds, then kills what is left (SIGKILL) and waits ``sigkill_timeout``
seconds more (``None``: no limit, what django-cqrs's flags given without a value mean).

A worker calls :func:`dj_cqrs.process.lifecycle.stop_when_orphaned` so that it stops when its
supervisor dies without stopping it.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from watchfiles import PythonFilter, watch

logger = logging.getLogger("django-cqrs.worker")


@dataclasses.dataclass
class _Slot:
    process: Any = None
    started: float = 0.0
    failures: int = 0
    restart_at: float = 0.0


def _join_all(processes: list[Any], timeout: float | None) -> None:
    """Wait for ``processes`` to end, ``timeout`` seconds in total (None: as long as it takes)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    for process in processes:
        process.join(None if deadline is None else max(0.0, deadline - time.monotonic()))


class Supervisor:
    """Runs ``workers`` processes of ``target(*args)`` until SIGTERM/SIGINT.

    ``target`` must be a module-level function (the processes are spawned: it is imported by
    name in each of them). ``label`` names the supervisor in its log lines.
    """

    def __init__(
        self,
        target: Callable[..., None],
        args: tuple[Any, ...] = (),
        workers: int = 1,
        reload: bool = False,
        ignore_paths: list[str] | None = None,
        sigint_timeout: float | None = 5,
        sigkill_timeout: float | None = 1,
        watch_path: str | None = None,
        label: str = "consumer",
        fork: bool = False,
        before_fork: Callable[[], None] | None = None,
        on_started: Callable[[], None] | None = None,
        on_worker_exit: Callable[[int], None] | None = None,
    ) -> None:
        self.target = target
        self.args = args
        self.workers = max(1, workers)
        self.reload = reload
        self.ignore_paths = ignore_paths or []
        self.sigint_timeout = sigint_timeout
        self.sigkill_timeout = sigkill_timeout
        self.watch_path = watch_path or os.getcwd()
        self.label = label
        self.slots = [_Slot() for _ in range(self.workers)]
        self._stop = threading.Event()
        self._restart_all = threading.Event()
        self._context = multiprocessing.get_context("spawn")
        #: ``fork``: start workers by forking this process (no second interpreter start and Django
        #: set-up, a few milliseconds instead of about half a second) while that is safe: the
        #: process has no other thread, and the code is the code it started with (no ``reload``,
        #: no SIGHUP restart since, which must pick up new code). ``before_fork`` runs first
        #: (close database connections, which a child must not share).
        self._fork = fork and not reload and "fork" in multiprocessing.get_all_start_methods()
        self._before_fork = before_fork
        #: Called once the first workers run (e.g. start a metrics server thread: forking the
        #: first workers needs a process without threads); ``on_worker_exit(pid)`` after a worker
        #: ended (e.g. drop its metrics files of live gauges).
        self._on_started = on_started
        self._on_worker_exit = on_worker_exit

    # -- signals ---------------------------------------------------------------------------------

    def _install_signals(self) -> None:
        def stop(signum: int, frame: Any) -> None:
            logger.info("CQRS %s supervisor received signal %s: stopping", self.label, signum)
            self._stop.set()

        def hup(signum: int, frame: Any) -> None:
            logger.info("CQRS %s supervisor received SIGHUP: restarting workers", self.label)
            self._restart_all.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, hup)

    def _start_watcher(self) -> None:
        ignore = [os.path.abspath(p) for p in self.ignore_paths]

        def run() -> None:
            for _changes in watch(
                self.watch_path,
                watch_filter=PythonFilter(ignore_paths=ignore),
                stop_event=self._stop,
                yield_on_timeout=False,
                raise_interrupt=False,
            ):
                logger.info("Code changed: restarting CQRS workers")
                self._restart_all.set()

        threading.Thread(target=run, name="dj_cqrs-reload", daemon=True).start()

    # -- processes -------------------------------------------------------------------------------

    def _spawn(self, slot: _Slot) -> None:
        process: Any
        if self._fork and threading.active_count() == 1:
            if self._before_fork is not None:
                self._before_fork()
            process = multiprocessing.get_context("fork").Process(
                target=_forked, args=(self.target, self.args), name="cqrs-worker"
            )
        else:
            process = self._context.Process(target=self.target, args=self.args, name="cqrs-worker")
        process.start()
        slot.process = process
        slot.started = time.monotonic()
        logger.info("CQRS worker process %s started", process.pid)

    def _stop_processes(self) -> None:
        alive = [s.process for s in self.slots if s.process is not None and s.process.is_alive()]
        for process in alive:
            try:
                os.kill(process.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
        _join_all(alive, self.sigint_timeout)
        for process in alive:
            if process.is_alive():
                logger.warning("CQRS worker %s did not stop in %ss: killing it", process.pid, self.sigint_timeout)
                process.kill()
        _join_all(alive, self.sigkill_timeout)
        for slot in self.slots:
            if slot.process is not None:
                self._exited(slot.process.pid)
            slot.process = None

    def _exited(self, pid: int | None) -> None:
        if self._on_worker_exit is not None and pid is not None:
            try:
                self._on_worker_exit(pid)
            except Exception:  # noqa: BLE001 - bookkeeping must not stop the supervisor
                logger.exception("CQRS %s supervisor: on_worker_exit(%s) failed", self.label, pid)

    def run(self) -> int:
        self._install_signals()
        if self.reload:
            self._start_watcher()
        for slot in self.slots:
            self._spawn(slot)
        if self._on_started is not None:
            self._on_started()
        while not self._stop.is_set():
            if self._restart_all.is_set():
                self._restart_all.clear()
                self._fork = False  # a restart of all workers is for new code: spawn from now on
                self._stop_processes()
                if self._stop.is_set():
                    break  # SIGTERM/SIGINT while the workers were stopping: start no new ones
                for slot in self.slots:
                    slot.failures = 0
                    self._spawn(slot)
            now = time.monotonic()
            for slot in self.slots:
                process = slot.process
                if process is not None and not process.is_alive():
                    code = process.exitcode
                    if code == EXIT_CONFIG:
                        # Restarting cannot help: every worker would stop on the same settings.
                        logger.error(
                            "CQRS worker %s stopped on a configuration error (logged above);"
                            " stopping the %s instead of restarting it",
                            process.pid,
                            self.label,
                        )
                        slot.process = None
                        self._exited(process.pid)
                        self._stop_processes()
                        return EXIT_CONFIG
                    lived = now - slot.started
                    slot.failures = slot.failures + 1 if lived < 10 else 1
                    delay = min(30.0, 0.5 * (2 ** (slot.failures - 1)))
                    logger.error(
                        "CQRS worker %s exited with code %s after %.1fs; restarting in %.1fs",
                        process.pid,
                        code,
                        lived,
                        delay,
                    )
                    slot.process = None
                    self._exited(process.pid)
                    slot.restart_at = now + delay
                if slot.process is None and now >= slot.restart_at and not self._stop.is_set():
                    self._spawn(slot)
            self._stop.wait(0.2)
        self._stop_processes()
        return 0


#: A worker's exit code for settings it cannot run with (sysexits' EX_CONFIG): not restarted.
EXIT_CONFIG = 78


def _forked(target: Callable[..., None], args: tuple[Any, ...]) -> None:
    """A forked worker: the supervisor's signal handlers are not its own."""
    for name in ("SIGTERM", "SIGINT", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    target(*args)


__all__ = ["EXIT_CONFIG", "Supervisor"]
