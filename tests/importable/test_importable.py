"""Import-time guard (the DRF "importable" idea): every ``dj_cqrs`` module can be imported in a
fresh interpreter WITHOUT Django settings, and importing it reads no setting, opens no database
connection, touches no network and starts no thread."""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
import textwrap

import dj_cqrs

#: Modules that define (abstract) Django models need the app registry, so they cannot be imported
#: before ``django.setup()``; that is Django's rule, not a side effect of ours.
NEEDS_APP_REGISTRY = {
    "dj_cqrs.master.mixins": "defines the abstract MasterMixin model",
    "dj_cqrs.replica.mixins": "defines the abstract ReplicaMixin model",
    "dj_cqrs.mixins": "re-exports the model mixins (django-cqrs import path)",
    "dj_cqrs.metas": "re-exports the metaclasses of the model mixins (django-cqrs import path)",
    "dj_cqrs.models": "defines the outbox and tombstone models of the dj_cqrs app",
}

#: Third-party modules imported once by the driver before it forks a child per dj_cqrs module;
#: they are not ours, and preloading them keeps the check fast. The driver verifies that preloading
#: them reads no setting either.
PRELOAD = [
    "django.apps",
    "django.conf",
    "django.contrib.messages",
    "django.core.checks",
    "django.core.exceptions",
    "django.core.management.base",
    "django.core.signals",
    "django.db",
    "django.db.models",
    "django.db.models.signals",
    "django.dispatch",
    "django.utils.dateparse",
    "django.utils.duration",
    "django.utils.module_loading",
    "django.utils.timezone",
    "kombu",
    "pika",
    "simplejson",
]

#: Runs in a fresh interpreter without DJANGO_SETTINGS_MODULE. For each module it forks a child
#: that has never imported dj_cqrs, refuses network and database connections, imports the module
#: and reports what happened. Prints ``module<TAB>problem`` lines; exits 3 if preloading misbehaved.
DRIVER = textwrap.dedent(
    """
    import importlib, os, socket, sqlite3, sys, threading

    from django.conf import settings
    from django.utils.functional import empty

    for name in sys.argv[2].split(","):
        importlib.import_module(name)
    if settings._wrapped is not empty or any(m.startswith("dj_cqrs") for m in sys.modules):
        sys.exit(3)

    touched = []

    def refuse(what):
        def _refuse(*args, **kwargs):
            touched.append(what)
            raise OSError(what + " at import time")
        return _refuse

    socket.socket.connect = refuse("socket.connect")
    socket.socket.connect_ex = refuse("socket.connect_ex")
    socket.create_connection = refuse("socket.create_connection")
    socket.getaddrinfo = refuse("socket.getaddrinfo")
    sqlite3.connect = refuse("sqlite3.connect")
    try:
        import psycopg2
        psycopg2.connect = refuse("psycopg2.connect")
    except ImportError:
        pass

    for module in sys.argv[1].split(","):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            threads = threading.active_count()
            try:
                importlib.import_module(module)
                problems = []
            except BaseException as exc:
                problems = ["import failed: %s: %s" % (type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")]
            if settings._wrapped is not empty:
                problems.append("Django settings were read")
            if touched:
                problems.append("touched " + ", ".join(touched))
            if threading.active_count() != threads:
                problems.append("started a thread")
            os.write(write, "; ".join(problems).encode())
            os._exit(0)
        os.close(write)
        chunks = []
        while True:
            chunk = os.read(read, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(read)
        os.waitpid(pid, 0)
        print(module + "\\t" + b"".join(chunks).decode().replace("\\n", " "))
    """
)


def all_modules() -> list[str]:
    names = [dj_cqrs.__name__]
    for info in pkgutil.walk_packages(dj_cqrs.__path__, prefix="dj_cqrs."):
        names.append(info.name)
    return sorted(names)


def import_each_fresh(modules: list[str]) -> dict[str, str]:
    """``{module: problems}`` ("" when clean), each module imported in its own fresh child."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-c", DRIVER, ",".join(modules), ",".join(PRELOAD)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr or f"exit code {result.returncode}"
    lines = [line.split("\t", 1) for line in result.stdout.splitlines() if "\t" in line]
    return {module: problem for module, problem in lines}


def test_module_list_is_complete():
    modules = all_modules()
    assert "dj_cqrs.transport.rabbit_mq" in modules
    assert "dj_cqrs.management.commands.cqrs_consume" in modules
    assert set(NEEDS_APP_REGISTRY) <= set(modules)


def test_every_module_imports_without_settings_db_network_or_threads():
    modules = all_modules()
    results = import_each_fresh(modules)
    assert sorted(results) == modules

    clean = {m: p for m, p in results.items() if m not in NEEDS_APP_REGISTRY}
    assert {m: p for m, p in clean.items() if p} == {}

    for module in NEEDS_APP_REGISTRY:
        # Django's own guard, raised before anything of ours runs: defining a model needs the app
        # registry, hence INSTALLED_APPS. Nothing else may be reported for these modules.
        assert results[module] == (
            "import failed: ImproperlyConfigured: Requested setting INSTALLED_APPS, but settings are"
            " not configured. You must either define the environment variable DJANGO_SETTINGS_MODULE"
            " or call settings.configure() before accessing settings."
        ), module


def test_the_guard_notices_a_module_that_reads_settings(tmp_path, monkeypatch):
    """The check itself works: a module reading a setting at import time is reported."""
    (tmp_path / "reads_settings_at_import.py").write_text(
        "from django.conf import settings\nDEBUG = settings.DEBUG\n"
    )
    (tmp_path / "connects_at_import.py").write_text(
        "import socket\ntry:\n    socket.create_connection(('127.0.0.1', 9))\nexcept OSError:\n    pass\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    results = import_each_fresh(["reads_settings_at_import", "connects_at_import"])
    assert results["reads_settings_at_import"].startswith("import failed: ImproperlyConfigured")
    assert results["connects_at_import"] == "touched socket.create_connection"
