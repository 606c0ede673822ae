"""The peer: django-cqrs 3.1.0 from PyPI in its own virtualenv, built once and cached.

The virtualenv lives under the repository's ``.cache/`` (gitignored), in a directory named after
the Python version and a hash of ``requirements.txt``, so a change of pins or of interpreter builds
a fresh one. A build is complete only when its marker file is written last; anything else found
there (an interrupted or broken build) is removed and rebuilt. A lock file serializes builds
between concurrent test sessions of this checkout. Every step has a time limit.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PEER_PACKAGE = "django-cqrs"
PEER_VERSION = "3.1.0"
REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = REPO_ROOT / ".cache"
REQUIREMENTS = Path(__file__).with_name("requirements.txt")
MARKER = ".dj-cqrs-compat-complete"

VENV_TIMEOUT = 120.0
PIP_TIMEOUT = 600.0
PROBE_TIMEOUT = 60.0
LOCK_TIMEOUT = 900.0

# Runs inside a Python (peer venv or ours) and reports which dj_cqrs it imports.
PROBE = """
import importlib.metadata, json, sys
import dj_cqrs
def version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
print(json.dumps({
    "dj_cqrs_file": dj_cqrs.__file__,
    "django_cqrs_version": version("django-cqrs"),
    "dj_cqrs_version": version("dj-cqrs"),
    "django_version": version("Django"),
    "prefix": sys.prefix,
}))
"""


class PeerUnavailable(RuntimeError):
    """The django-cqrs virtualenv could not be built or does not import django-cqrs 3.1.0."""


def venv_key() -> str:
    digest = hashlib.sha256()
    digest.update(REQUIREMENTS.read_bytes())
    digest.update(sys.version.encode())
    digest.update(os.path.realpath(sys.executable).encode())
    return digest.hexdigest()[:12]


def venv_dir() -> Path:
    return CACHE_DIR / f"django-cqrs-{PEER_VERSION}-py{sys.version_info[0]}{sys.version_info[1]}-{venv_key()}"


def venv_python(path: Path) -> Path:
    return path / "bin" / "python"


def probe(python: str | os.PathLike[str], cwd: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """What ``python`` imports as ``dj_cqrs`` (file, versions); raises :class:`PeerUnavailable`."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE")}
    try:
        result = subprocess.run(
            # -I: no current directory on sys.path (a checkout's dj_cqrs must not shadow the venv's)
            [os.fspath(python), "-I", "-c", PROBE],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT,
            env=env,
            cwd=cwd or tempfile.gettempdir(),
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise PeerUnavailable(f"cannot run {python}: {exc!r}") from exc
    if result.returncode != 0:
        raise PeerUnavailable(f"{python} cannot import dj_cqrs:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def verify(path: Path) -> dict[str, Any]:
    """Check a built virtualenv: complete, and importing django-cqrs 3.1.0 from inside itself."""
    python = venv_python(path)
    marker = path / MARKER
    if not python.exists() or not marker.exists() or marker.read_text().strip() != venv_key():
        raise PeerUnavailable(f"{path} is not a complete peer virtualenv")
    info = probe(python)
    where = Path(info["dj_cqrs_file"]).resolve()
    if path.resolve() not in where.parents:
        raise PeerUnavailable(f"{python} imports dj_cqrs from {where}, outside {path}")
    if info["django_cqrs_version"] != PEER_VERSION:
        raise PeerUnavailable(f"{python} has django-cqrs {info['django_cqrs_version']}, not {PEER_VERSION}")
    return info


def _run(cmd: list[str], timeout: float, what: str) -> None:
    started = time.monotonic()
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise PeerUnavailable(f"{what} did not finish in {timeout:.0f}s") from exc
    except OSError as exc:
        raise PeerUnavailable(f"{what} could not start: {exc!r}") from exc
    if result.returncode != 0:
        raise PeerUnavailable(
            f"{what} failed (exit {result.returncode}) after {time.monotonic() - started:.0f}s:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )


def build(path: Path) -> None:
    """Create the virtualenv at ``path`` from scratch with the pinned requirements."""
    shutil.rmtree(path, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The same interpreter as ours (``python -m venv`` from a venv uses its base Python).
    _run([sys.executable, "-m", "venv", os.fspath(path)], VENV_TIMEOUT, "python -m venv")
    _run(
        [
            os.fspath(venv_python(path)),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "--progress-bar=off",
            "--prefer-binary",
            "--timeout",
            "30",
            "--retries",
            "3",
            "-r",
            os.fspath(REQUIREMENTS),
        ],
        PIP_TIMEOUT,
        f"pip install -r {REQUIREMENTS.name}",
    )
    (path / MARKER).write_text(venv_key() + "\n")


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / "django-cqrs-venv.lock", "w") as handle:
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise PeerUnavailable("timed out waiting for another build of the peer virtualenv") from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_peer_python() -> str:
    """The python of the django-cqrs 3.1.0 virtualenv, building it when missing or broken."""
    path = venv_dir()
    with _build_lock():
        try:
            verify(path)
        except PeerUnavailable:
            prune_stale()
            build(path)
            verify(path)
    return os.fspath(venv_python(path))


def prune_stale() -> None:
    """Remove peer virtualenvs for other pins/interpreters (keeps ``.cache`` from growing)."""
    current = venv_dir()
    for old in CACHE_DIR.glob(f"django-cqrs-{PEER_VERSION}-py*-*"):
        if old != current and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)


if __name__ == "__main__":  # ``python -m integration_tests.compat.peer`` builds it ahead of time
    started = time.monotonic()
    print(ensure_peer_python(), f"({time.monotonic() - started:.1f}s)")
