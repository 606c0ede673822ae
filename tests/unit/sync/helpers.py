"""Helpers for the reconciliation tests: run commands and capture stdout/stderr/exit code."""

from __future__ import annotations

import dataclasses
import io
from typing import Any

from django.core.management import call_command
from django.core.management.base import CommandError


@dataclasses.dataclass
class Run:
    out: str
    err: str
    code: int
    error: str = ""


def run(name: str, *args: str, stdin: str | None = None, **options: Any) -> Run:
    """``call_command`` like ``manage.py`` would run it: exit code 0, or the CommandError's."""
    out, err = io.StringIO(), io.StringIO()
    if stdin is not None:
        options["stdin"] = io.StringIO(stdin)
    try:
        call_command(name, *args, stdout=out, stderr=err, **options)
    except CommandError as exc:
        return Run(out.getvalue(), err.getvalue(), exc.returncode, str(exc))
    return Run(out.getvalue(), err.getvalue(), 0)


def rows(model: Any, exclude: tuple[str, ...] = ()) -> dict[Any, dict[str, Any]]:
    """``{pk: {field: value}}`` of every row of ``model`` (attnames, Python values)."""
    result = {}
    for obj in model._base_manager.order_by("pk"):
        result[obj.pk] = {
            f.name: getattr(obj, f.attname) for f in model._meta.concrete_fields if f.name not in exclude
        }
    return result
