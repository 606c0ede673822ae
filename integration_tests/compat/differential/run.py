"""Run differential scenarios with whichever ``dj_cqrs`` this interpreter imports.

    python -I run.py [scenario ...]     # all scenarios when none is named

Prints one JSON document on its last line: the ``dj_cqrs`` file imported and, per scenario, its
normalised result (or the exception it raised). Each scenario starts on an empty database.
Run it from this directory with ``-I``, so that no checkout's ``dj_cqrs`` shadows the package
installed in the interpreter's environment.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import sys
import traceback
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
os.environ["DJANGO_SETTINGS_MODULE"] = "dproject.settings"


def collect() -> dict[str, Any]:
    import scenarios

    found: dict[str, Any] = {}
    for info in sorted(pkgutil.iter_modules(scenarios.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"scenarios.{info.name}")
        for name, fn in vars(module).items():
            if name.startswith("check_") and callable(fn):
                found[f"{info.name}.{name}"] = fn
    return found


def main(argv: list[str]) -> int:
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", run_syncdb=True, verbosity=0, interactive=False)
    from scenarios._base import norm

    import dj_cqrs

    available = collect()
    wanted = argv or list(available)
    results: dict[str, Any] = {}
    for name in wanted:
        call_command("flush", interactive=False, verbosity=0)
        try:
            results[name] = {"result": norm(available[name]())}
        except Exception as exc:  # noqa: BLE001 - reported, compared
            results[name] = {
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(limit=-6),
            }
    print(json.dumps({"dj_cqrs_file": dj_cqrs.__file__, "results": results}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
