"""Fixtures for mixed fleets: one service on our dj_cqrs, the other on django-cqrs 3.1.0."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration_tests.compat.peer import (
    PEER_VERSION,
    PROBE,
    REPO_ROOT,
    PeerUnavailable,
    ensure_peer_python,
)
from integration_tests.conftest import Fleet, make_fleet
from integration_tests.harness import OUR_PYTHON, Service, in_ci


def pytest_collection_modifyitems(items: list[Any]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.compat)


def service_probe(python: str) -> dict[str, Any]:
    """Which dj_cqrs a service process really imports: ``manage.py shell`` of the replica service,
    run the way the fleets run it (no PYTHONPATH, the service directory as working directory)."""
    with tempfile.TemporaryDirectory() as tmp:
        service = Service("replica", python, {"IT_DB_ENGINE": "sqlite3", "IT_DB_NAME": str(Path(tmp) / "probe.sqlite3")})
        output = service.manage("shell", "-c", PROBE).stdout
    return json.loads(output.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def compat_python() -> str:
    """Python of the virtualenv with django-cqrs 3.1.0 (built once, cached in ``.cache/``).

    Skips when it cannot be built on a laptop (e.g. offline); fails under CI=true.
    """
    try:
        python = ensure_peer_python()
    except PeerUnavailable as exc:
        message = f"django-cqrs {PEER_VERSION} peer virtualenv unavailable: {exc}"
        if in_ci():
            pytest.fail(message + " - CI=true requires it", pytrace=False)
        pytest.skip(message)
    info = service_probe(python)
    venv = Path(python).parent.parent.resolve()
    assert venv in Path(info["dj_cqrs_file"]).resolve().parents, info
    assert info["django_cqrs_version"] == PEER_VERSION, info
    assert info["dj_cqrs_version"] is None, f"our dj-cqrs leaked into the peer venv: {info}"
    return python


@pytest.fixture(scope="session")
def our_python() -> str:
    """Our interpreter, checked to import this checkout's dj_cqrs (not django-cqrs)."""
    info = service_probe(OUR_PYTHON)
    assert Path(info["dj_cqrs_file"]).resolve() == (REPO_ROOT / "dj_cqrs" / "__init__.py").resolve(), info
    assert info["django_cqrs_version"] is None, f"django-cqrs is installed next to ours: {info}"
    return OUR_PYTHON


@pytest.fixture
def our_master_their_replica(rabbitmq: None, postgres: None, our_python: str, compat_python: str, request: pytest.FixtureRequest) -> Iterator[Fleet]:
    yield from make_fleet(our_python, compat_python, _extra_env(request))


@pytest.fixture
def their_master_our_replica(rabbitmq: None, postgres: None, our_python: str, compat_python: str, request: pytest.FixtureRequest) -> Iterator[Fleet]:
    yield from make_fleet(compat_python, our_python, _extra_env(request))


def _extra_env(request: pytest.FixtureRequest) -> dict[str, str]:
    marker = request.node.get_closest_marker("fleet_env")
    return dict(marker.args[0]) if marker else {}
