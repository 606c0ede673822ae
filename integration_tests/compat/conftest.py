"""Fixtures for mixed fleets: one service on our dj_cqrs, the other on django-cqrs 3.1.0."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration_tests.compat.peer import (
    PEER_VERSION,
    REPO_ROOT,
    PeerUnavailable,
    ensure_peer_python,
    probe,
)
from integration_tests.conftest import Fleet, make_fleet
from integration_tests.harness import OUR_PYTHON, SERVICES, in_ci


def pytest_collection_modifyitems(items: list[Any]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.compat)


@pytest.fixture(scope="session")
def compat_python() -> str:
    """Python of the virtualenv with django-cqrs 3.1.0 (built once, cached in ``.cache/``).

    Skips when it cannot be built on a laptop (e.g. offline); fails under CI=true.
    """
    try:
        python = ensure_peer_python()
        # As the services run it: from the service directory, importing the venv's dj_cqrs.
        info = probe(python, cwd=SERVICES / "replica")
    except PeerUnavailable as exc:
        message = f"django-cqrs {PEER_VERSION} peer virtualenv unavailable: {exc}"
        if in_ci():
            pytest.fail(message + " - CI=true requires it", pytrace=False)
        pytest.skip(message)
    venv = Path(python).parent.parent.resolve()
    assert venv in Path(info["dj_cqrs_file"]).resolve().parents, info
    assert info["django_cqrs_version"] == PEER_VERSION, info
    assert info["dj_cqrs_version"] is None, f"our dj-cqrs leaked into the peer venv: {info}"
    return python


@pytest.fixture(scope="session")
def our_python() -> str:
    """Our interpreter, checked to import this checkout's dj_cqrs (not django-cqrs)."""
    info = probe(OUR_PYTHON, cwd=SERVICES / "replica")
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
