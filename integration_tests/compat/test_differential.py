"""Differential compatibility suite: the same scenario under django-cqrs 3.1.0 and under ours.

Each ``check_*`` function in ``differential/scenarios/`` runs once in the peer virtualenv and once
with this checkout (both on SQLite, one process per package for all scenarios), and the two
normalised outcomes must be equal; then the same on PostgreSQL (where dj_cqrs writes a save's,
a delete's and a bulk write's outbox rows in the statement of the change). A scenario decorated ``@documented("...")`` differs on purpose:
its text must stand on a line of ``docs/upgrading.md``, and its outcomes must really differ (a
documented difference that disappeared is reported, so the docs do not keep a stale line).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration_tests.compat.peer import REPO_ROOT
from integration_tests.harness import OUR_PYTHON, PG_HOST, PG_PORT, pg_database, require, unique

HERE = Path(__file__).parent / "differential"
UPGRADING = REPO_ROOT / "docs" / "upgrading.md"
RUN_TIMEOUT = 600


def _scenarios() -> dict[str, str | None]:
    """``module.check_name`` → the documented line (None when the outcomes must be equal)."""
    found: dict[str, str | None] = {}
    for path in sorted((HERE / "scenarios").glob("*.py")):
        if path.name.startswith("_"):
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("check_"):
                line = None
                for deco in node.decorator_list:
                    if isinstance(deco, ast.Call) and getattr(deco.func, "id", "") == "documented":
                        line = ast.literal_eval(deco.args[0])
                found[f"{path.stem}.{node.name}"] = line
    return found


SCENARIOS = _scenarios()


def _run(python: str, db_url: str = "") -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE", "DIFF_DB_URL")}
    if db_url:
        env["DIFF_DB_URL"] = db_url
    result = subprocess.run(
        [python, "-I", str(HERE / "run.py")],
        cwd=HERE,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, f"{python} run.py failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _outcomes(compat_python: str, db_url: str = "") -> dict[str, dict[str, Any]]:
    theirs = _run(compat_python, db_url)
    ours = _run(OUR_PYTHON, db_url)
    peer_venv = Path(compat_python).parent.parent.resolve()
    assert peer_venv in Path(theirs["dj_cqrs_file"]).resolve().parents, theirs["dj_cqrs_file"]
    assert Path(ours["dj_cqrs_file"]).resolve() == (REPO_ROOT / "dj_cqrs" / "__init__.py").resolve()
    return {"theirs": theirs["results"], "ours": ours["results"]}


@pytest.fixture(scope="module")
def outcomes(compat_python: str) -> dict[str, dict[str, Any]]:
    return _outcomes(compat_python)


@pytest.fixture(scope="module")
def pg_outcomes(compat_python: str) -> Iterator[dict[str, dict[str, Any]]]:
    require(PG_HOST, PG_PORT, "PostgreSQL")
    with pg_database(unique("diff")) as name:
        yield _outcomes(compat_python, f"postgres://postgres@{PG_HOST}:{PG_PORT}/{name}")


def _shown(result: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in result.items() if k != "traceback"}, indent=1, sort_keys=True)[:4000]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_same_behaviour_as_django_cqrs(name: str, outcomes: dict[str, dict[str, Any]]) -> None:
    _compare(name, outcomes)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_same_behaviour_as_django_cqrs_on_postgresql(name: str, pg_outcomes: dict[str, dict[str, Any]]) -> None:
    _compare(name, pg_outcomes)


def _compare(name: str, outcomes: dict[str, dict[str, Any]]) -> None:
    theirs, ours = outcomes["theirs"][name], outcomes["ours"][name]
    documented = SCENARIOS[name]
    if documented is None:
        assert ours == theirs, (
            f"{name} differs from django-cqrs 3.1.0 and docs/upgrading.md does not say so\n"
            f"django-cqrs: {_shown(theirs)}\nours: {_shown(ours)}\n{ours.get('traceback', '')}"
        )
    else:
        lines = [line for line in UPGRADING.read_text().splitlines() if documented in line]
        assert lines, f"{name} is marked documented, but docs/upgrading.md has no line with {documented!r}"
        assert ours != theirs, f"{name} is marked as a documented difference, but both packages behave the same"


def test_every_scenario_ran(outcomes: dict[str, dict[str, Any]], pg_outcomes: dict[str, dict[str, Any]]) -> None:
    assert set(outcomes["theirs"]) == set(SCENARIOS) == set(outcomes["ours"])
    assert set(pg_outcomes["theirs"]) == set(SCENARIOS) == set(pg_outcomes["ours"])
