"""``Supervisor(fork=True)`` forks workers while that is safe, and spawns them otherwise."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from dj_cqrs.process.supervisor import Supervisor

#: Set in this (the supervisor's) process only: a forked worker sees it, a spawned one does not.
PARENT_STATE: dict[str, str] = {}


def record(path: str) -> None:
    Path(path).write_text(PARENT_STATE.get("marker", "fresh interpreter"))


def _start_one(tmp_path: Path, **kwargs) -> str:
    out = tmp_path / f"out-{len(list(tmp_path.iterdir()))}"
    supervisor = Supervisor(record, args=(str(out),), **kwargs)
    supervisor._spawn(supervisor.slots[0])
    supervisor.slots[0].process.join(30)
    assert supervisor.slots[0].process.exitcode == 0
    return out.read_text()


FORK_SCRIPT = """
import os, sys
from dj_cqrs.process.supervisor import Supervisor

STATE = {"marker": f"forked from {os.getpid()}"}  # set before the fork: only a forked child sees it
calls = []

def record(path):
    open(path, "w").write(STATE["marker"])

supervisor = Supervisor(record, args=(sys.argv[1],), fork=True, before_fork=lambda: calls.append("closed"))
supervisor._spawn(supervisor.slots[0])
supervisor.slots[0].process.join(30)
print(supervisor.slots[0].process.exitcode, calls, os.getpid())
"""


def test_forked_worker_shares_the_supervisors_state_and_runs_before_fork(tmp_path):
    # In a fresh interpreter: this test process may have threads of its own (then the supervisor
    # rightly spawns instead).
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT, str(out)], capture_output=True, text=True, timeout=60, check=True
    )
    exitcode, calls, pid = result.stdout.split(" ", 1)[0], result.stdout.split("[", 1)[1].split("]")[0], result.stdout.split()[-1]
    assert exitcode == "0" and calls == "'closed'"
    assert out.read_text() == f"forked from {pid}"


def test_workers_are_spawned_with_reload_or_another_thread(tmp_path):
    PARENT_STATE["marker"] = "inherited"
    try:
        assert _start_one(tmp_path, fork=True, reload=True) == "fresh interpreter"
        release = threading.Event()
        other = threading.Thread(target=release.wait, daemon=True)
        other.start()
        try:
            assert _start_one(tmp_path, fork=True) == "fresh interpreter"
        finally:
            release.set()
            other.join()
        assert _start_one(tmp_path) == "fresh interpreter"  # fork is opt-in
    finally:
        PARENT_STATE.clear()
