"""Management command details a script or an operator sees (issue 10, audit entries 5, 7, 9)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from typing import Any
from unittest import mock

from django.core.management import call_command, load_command_class
from dmaster.models import Author, NarrowCounter, Picky, Ticket
from dreplica.models import AuthorRef

from scenarios._base import documented, logged

UPDATED = "2024-01-02 03:04:05+00:00"


def _command(name: str, *args: str, stdin: str | None = None) -> dict[str, Any]:
    """Run a command as ``manage.py`` would: stdout and stderr (the command's streams and
    ``sys.stdout``/``sys.stderr``, where django-cqrs prints some lines), exit code or the exception."""
    out, err = io.StringIO(), io.StringIO()
    code: Any = 0
    feed = mock.patch("sys.stdin", io.StringIO(stdin)) if stdin is not None else contextlib.nullcontext()
    with feed, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            call_command(name, *args, stdout=out, stderr=err)
        except SystemExit as exc:
            code = exc.code
        except Exception as exc:  # noqa: BLE001 - the exception is the observation
            code = type(exc).__name__
            err.write(f"{code}: {exc}".replace(tempfile.gettempdir(), "<tmp>"))
    return {"stdout": out.getvalue(), "stderr": err.getvalue().strip().splitlines(), "exit": code}


def _options(command: str, *argv: str) -> dict[str, Any]:
    parser = load_command_class("dj_cqrs", command).create_parser("manage.py", command)
    return vars(parser.parse_args(list(argv)))


def _dump_lines(cqrs_id: str) -> list[list[str]]:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "dump")
        _command("cqrs_bulk_dump", "--cqrs-id", cqrs_id, "-o", path)
        with open(path) as f:
            lines = f.read().split("\n")
    return [list(json.loads(line)) for line in lines[1:]]


def check_consume_flags_without_a_value() -> Any:
    names = ("ignore_paths", "sigint_timeout", "sigkill_timeout")
    alone = _options("cqrs_consume", "--ignore-paths", "--sigint-timeout", "--sigkill-timeout")
    given = _options("cqrs_consume", "--ignore-paths", "env,node_modules", "--sigint-timeout", "3", "--sigkill-timeout", "2")
    default = _options("cqrs_consume")
    return {
        "alone": {n: alone[n] for n in names},
        "given": {n: given[n] for n in names},
        "default": {n: default[n] for n in names[1:]},
    }


def check_bulk_load_prints_done() -> Any:
    Author.objects.create(name="a")
    Author.objects.create(name="b")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "dump")
        _command("cqrs_bulk_dump", "--cqrs-id", "diff_author", "-o", path)
        loaded = _command("cqrs_bulk_load", "-i", path)
        with open(path, "w") as f:
            f.write("")
        empty = _command("cqrs_bulk_load", "-i", path)
    return {
        "loaded": {"stderr": loaded["stderr"][:2], "exit": loaded["exit"]},
        "empty: no Done!": {"stderr": [line.split("/")[-1] for line in empty["stderr"]], "exit": empty["exit"]},
        "rows": AuthorRef.objects.count(),
    }


def check_bulk_dump_key_order() -> Any:
    Author.objects.create(name="a")
    Ticket.objects.create(number=7, title="t")
    NarrowCounter.objects.create(name="n", hits=3)
    return {cqrs_id: _dump_lines(cqrs_id) for cqrs_id in ("diff_author", "diff_ticket", "diff_narrow_counter")}


def check_diff_replica_pk_to_resync_line() -> Any:
    for pk in (2, 3, 9):
        AuthorRef.objects.create(id=pk, name=f"r{pk}", cqrs_revision=0, cqrs_updated=UPDATED)
    stream = f"diff_author,{UPDATED}\n" + json.dumps([[9, 1], [2, 0], [3, 4], [77, 0]]) + "\n"
    return _command("cqrs_diff_replica", stdin=stream)


def check_unknown_cqrs_id_is_logged() -> Any:
    header = f"nope,{UPDATED}"
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "dump")
        with open(path, "w") as f:
            f.write("nope\n{}\n")
        runs = {
            "cqrs_bulk_dump": ("cqrs_bulk_dump", ("--cqrs-id", "nope", "-o", os.path.join(tmp, "out")), None),
            "cqrs_bulk_load": ("cqrs_bulk_load", ("-i", path), None),
            "cqrs_sync": ("cqrs_sync", ("--cqrs-id", "nope", "-f", "{}"), None),
            "cqrs_diff_master": ("cqrs_diff_master", ("--cqrs-id", "nope"), None),
            "cqrs_diff_replica": ("cqrs_diff_replica", (), f"{header}\n[[1, 0]]\n"),
            "cqrs_diff_sync": ("cqrs_diff_sync", (), f"{header},None\n[1]\n"),
            "cqrs_deleted_diff_replica": ("cqrs_deleted_diff_replica", ("--cqrs-id", "nope"), None),
            "cqrs_deleted_diff_master": ("cqrs_deleted_diff_master", (), f"{header}\n[1]\n"),
            "cqrs_deleted_sync_replica": ("cqrs_deleted_sync_replica", (), f"{header}\n[1]\n"),
        }
        for label, (name, args, stdin) in runs.items():
            with logged() as lines:
                result = _command(name, *args, stdin=stdin)
            results[label] = {"logged": lines, "exit": result["exit"]}
    return results


def check_dead_letters_invocations_of_django_cqrs() -> Any:
    return {sub: _options("cqrs_dead_letters", sub)["command"] for sub in ("retry", "dump", "purge")}


@documented("the commands count them on their own line")
def check_sync_command_counts_filtered_rows() -> Any:
    Picky.objects.create(name="shown")
    Picky.objects.create(name="hidden", visible=False)
    with mock.patch("dj_cqrs.controller.producer.produce"):
        result = _command("cqrs_sync", "--cqrs-id", "diff_picky", "-f", "{}")
    return result["stdout"].strip().splitlines()
