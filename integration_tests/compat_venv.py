"""A cached virtualenv with django-cqrs 3.1.0 from PyPI, to run it as a peer.

Stop-gap until ``integration_tests/compat/`` (built on another branch) lands: it exposes the same
idea, a Python interpreter path whose ``dj_cqrs`` is django-cqrs 3.1.0, so swapping this module for
that package's ``compat_python`` fixture is a one-line change in the tests that use it.

The venv lives under ``<repo>/.cache/``; its directory name carries a hash of the pinned
requirements, so changing a pin builds a new one. A lock file makes concurrent test processes
wait for one build instead of racing.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("DJ_CQRS_COMPAT_CACHE", REPO / ".cache"))

#: What the peer runs on: the incumbent exactly as teams run it today.
REQUIREMENTS = (
    "django-cqrs==3.1.0",
    "Django==5.2.19",
    "psycopg2-binary==2.9.13",
    "djangorestframework==3.18.3",
)


def venv_dir() -> Path:
    digest = hashlib.sha256("\n".join(REQUIREMENTS).encode()).hexdigest()[:10]
    return CACHE / f"django-cqrs-3.1.0-{digest}"


def python_path() -> Path:
    return venv_dir() / "bin" / "python"


def ensure_venv(quiet: bool = True) -> str:
    """Create the venv once (about a minute the first time) and return its python.

    Raises ``RuntimeError`` with pip's output when the install fails (e.g. no registry access).
    """
    target = venv_dir()
    stamp = target / ".complete"
    if stamp.exists():
        return str(python_path())
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / (target.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if stamp.exists():
                return str(python_path())
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(target)], check=True)
            result = subprocess.run(
                [str(python_path()), "-m", "pip", "install", "--disable-pip-version-check",
                 *(["-q"] if quiet else []), *REQUIREMENTS],
                capture_output=True,
                text=True,
                timeout=900,
            )
            if result.returncode != 0:
                raise RuntimeError(
                    f"installing {' '.join(REQUIREMENTS)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
                )
            check = subprocess.run(
                [str(python_path()), "-c", "import importlib.metadata as m; print(m.version('django-cqrs'))"],
                capture_output=True, text=True, check=True,
            )
            if check.stdout.strip() != "3.1.0":
                raise RuntimeError(f"expected django-cqrs 3.1.0 in {target}, got {check.stdout!r}")
            stamp.write_text(check.stdout)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return str(python_path())


if __name__ == "__main__":
    print(ensure_venv(quiet=False))
