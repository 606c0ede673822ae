"""``cqrs_consume`` argument handling (django-cqrs's options); the supervisor itself runs real
processes and is tested in ``integration_tests/test_supervisor.py``."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from dj_cqrs.process.supervisor import Supervisor
from dj_cqrs.replica.worker import worker_main

# the command checks that the replica tables exist before it starts the workers
pytestmark = pytest.mark.django_db


@pytest.fixture
def runs(monkeypatch):
    """Supervisors the command built and ran (their run() returns at once)."""
    started: list[Supervisor] = []

    def run(self: Supervisor) -> int:
        started.append(self)
        return 0

    monkeypatch.setattr(Supervisor, "run", run)
    return started


def cqrs_ids(supervisor: Supervisor) -> list[str] | None:
    """The ``cqrs_ids`` the supervisor's workers get (they run ``worker_main(cqrs_ids)``)."""
    assert supervisor.target is worker_main
    (ids,) = supervisor.args
    return ids


def test_defaults(runs):
    call_command("cqrs_consume")
    [supervisor] = runs
    assert supervisor.workers == 1
    assert cqrs_ids(supervisor) is None
    assert supervisor.reload is False
    assert supervisor.ignore_paths == []
    assert (supervisor.sigint_timeout, supervisor.sigkill_timeout) == (5, 1)


def test_django_cqrs_short_options(runs):
    call_command(
        "cqrs_consume", "-w", "3", "-cid", "simplest", "basic", "-r",
        "--ignore-paths", " migrations, static ,", "--sigint-timeout", "2.5", "--sigkill-timeout", "0.5",
    )
    [supervisor] = runs
    assert supervisor.workers == 3
    assert cqrs_ids(supervisor) == ["simplest", "basic"]
    assert supervisor.reload is True
    assert supervisor.ignore_paths == ["migrations", "static"]
    assert (supervisor.sigint_timeout, supervisor.sigkill_timeout) == (2.5, 0.5)


def test_long_options(runs):
    call_command("cqrs_consume", "--workers", "2", "--cqrs-id", "simplest", "--reload")
    [supervisor] = runs
    assert (supervisor.workers, cqrs_ids(supervisor), supervisor.reload) == (2, ["simplest"], True)


def test_cqrs_id_without_values_means_every_model(runs):
    call_command("cqrs_consume", "--cqrs-id")
    assert cqrs_ids(runs[0]) is None


@pytest.mark.parametrize("workers", ["0", "-1"])
def test_workers_must_be_positive(runs, workers):
    with pytest.raises(CommandError, match="--workers must be >= 1"):
        call_command("cqrs_consume", "-w", workers)
    assert runs == []


def test_unknown_cqrs_id_is_refused(runs, caplog):
    with pytest.raises(CommandError, match="Wrong CQRS ID: nope, missing!"):
        call_command("cqrs_consume", "--cqrs-id", "simplest", "nope", "missing")
    assert runs == []
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("ERROR", "No model with such CQRS_ID: nope."), ("ERROR", "No model with such CQRS_ID: missing.")
    ]


def test_flags_without_a_value_as_django_cqrs(runs):
    """``nargs='?'`` as django-cqrs: the flag alone ignores nothing and sets no time limit."""
    call_command("cqrs_consume", "--ignore-paths", "--sigint-timeout", "--sigkill-timeout")
    [supervisor] = runs
    assert supervisor.ignore_paths == []
    assert (supervisor.sigint_timeout, supervisor.sigkill_timeout) == (None, None)


def test_stop_without_a_time_limit_waits_for_the_workers(monkeypatch):
    supervisor = Supervisor(worker_main, sigint_timeout=None, sigkill_timeout=None)
    joined: list[float | None] = []

    class Stopping:
        pid = 4242
        alive = True

        def is_alive(self) -> bool:
            return self.alive

        def join(self, timeout: float | None = None) -> None:
            joined.append(timeout)
            self.alive = False

        def kill(self) -> None:  # pragma: no cover - the worker stopped when asked
            raise AssertionError("killed a worker that stopped")

    supervisor.slots[0].process = Stopping()  # type: ignore[assignment]
    monkeypatch.setattr("os.kill", lambda pid, sig: None)
    supervisor._stop_processes()
    assert joined == [None, None]
    assert supervisor.slots[0].process is None
