"""Shared option handling of the reconciliation commands.

Exit codes (documented in ``docs/commands.md``):

* ``0`` - everything was processed;
* ``1`` - the command could not run (unknown ``CQRS_ID``, bad ``--filter``, unreadable or empty
  input, output file exists, broker or database unavailable); a ``CommandError`` says why;
* ``2`` - invalid command line (argparse usage error);
* ``3`` - the command ran to the end, but some lines or rows failed; each one was reported on
  stderr (with its line number for input streams) and the summary counts them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import IO, Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import models

from dj_cqrs.registry import master_registry, replica_registry
from dj_cqrs.sync import find_model
from dj_cqrs.sync.keyset import fetch_with_reconnect

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3

DEFAULT_BATCH = 10000

_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "off", ""})


def parse_bool(value: Any) -> bool:
    """``--clear`` values: ``1/true/yes/on`` and ``0/false/no/off`` (any case)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false, 1/0, yes/no), got {value!r}")


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {number}")
    return number


def _seconds(value: str, *, zero: bool) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds, got {value!r}")
    if number < 0 or (number == 0 and not zero):
        raise argparse.ArgumentTypeError(f"must be {'>= 0' if zero else '> 0'}, got {value}")
    return number


def non_negative_seconds(value: str) -> float:
    """``--interval`` values: a number of seconds >= 0 (a negative one would poll without pause)."""
    return _seconds(value, zero=True)


def positive_seconds(value: str) -> float:
    """``--timeout`` values: a number of seconds > 0."""
    return _seconds(value, zero=False)


def non_negative_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {number}")
    return number


def cqrs_id_flags(*aliases: str) -> list[str]:
    """The option names of a CQRS_ID in every command: ``--cqrs-id`` and ``-cid``, then the
    aliases a command had in django-cqrs (kept)."""
    flags = ["--cqrs-id", "-cid"]
    flags.extend(a for a in aliases if a not in flags)
    return flags


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``1 dead letter``, ``2 dead letters``."""
    return f"{count} {singular if count == 1 else (plural_form or singular + 's')}"


class CqrsCommand(BaseCommand):
    """Base of the reconciliation commands: model lookup, filters, batches, progress, exit codes."""

    #: ``call_command(..., stdin=io.StringIO(...))`` feeds the input stream in tests.
    stealth_options = ("stdin",)

    # -- arguments -------------------------------------------------------------------------------

    @staticmethod
    def add_cqrs_id(parser: CommandParser, *flags: str, side: str = "master") -> None:
        """``--cqrs-id``/``-cid`` (every command), plus django-cqrs's own spelling of the command
        in ``flags`` (``cqrs_bulk_dump -c``)."""
        parser.add_argument(*cqrs_id_flags(*flags), dest="cqrs_id", required=True, help=f"CQRS_ID of the {side} model")

    @staticmethod
    def add_batch(parser: CommandParser) -> None:
        parser.add_argument(
            "--batch", "-b", type=positive_int, default=DEFAULT_BATCH,
            help=f"Batch size (default {DEFAULT_BATCH})",
        )

    @staticmethod
    def add_progress(parser: CommandParser) -> None:
        parser.add_argument("--progress", "-p", action="store_true", help="Display progress (on stderr)")

    @staticmethod
    def add_filter(parser: CommandParser) -> None:
        parser.add_argument("--filter", "-f", dest="filter", default=None, help="Filter kwargs (JSON object)")

    # -- helpers ---------------------------------------------------------------------------------

    @staticmethod
    def master_model(cqrs_id: str) -> Any:
        model = find_model(master_registry, cqrs_id)
        if model is None:
            raise CommandError(f"Wrong CQRS ID: {cqrs_id}!")
        return model

    @staticmethod
    def replica_model(cqrs_id: str) -> Any:
        model = find_model(replica_registry, cqrs_id)
        if model is None or not (isinstance(model, type) and issubclass(model, models.Model)):
            raise CommandError(f"Wrong CQRS ID: {cqrs_id}!")
        return model

    @staticmethod
    def filtered(model: Any, raw: str | None) -> models.QuerySet[Any]:
        """``model``'s default manager filtered by ``--filter`` (a JSON object of lookups)."""
        qs = model._default_manager.all()
        if raw is None:
            return qs  # type: ignore[no-any-return]
        try:
            kwargs = json.loads(raw)
        except ValueError:
            raise CommandError("Bad filter kwargs!") from None
        if not isinstance(kwargs, dict):
            raise CommandError("Bad filter kwargs! Expected a JSON object.")
        try:
            qs = qs.filter(**kwargs)
            fetch_with_reconnect(qs.exists, qs.db)  # waits through a database outage
        except Exception as exc:  # FieldError, ValidationError, ValueError, TypeError...
            raise CommandError(f"Bad filter kwargs! {exc}") from exc
        return qs  # type: ignore[no-any-return]

    def input_stream(self, options: dict[str, Any], path: str = "-") -> IO[str]:
        if path == "-":
            stream = options.get("stdin")
            return stream if stream is not None else sys.stdin
        try:
            return open(path, encoding="utf-8")  # noqa: SIM115 - closed by the caller
        except OSError as exc:
            raise CommandError(f"File {path} cannot be read: {exc.strerror}!") from exc

    def report_line_error(self, number: int, reason: str) -> None:
        self.stderr.write(f"line {number}: {reason}")

    def report_row_error(self, pk: Any, reason: str) -> None:
        self.stderr.write(f"pk={pk!r}: {reason}")

    @contextlib.contextmanager
    def progress(self, enabled: bool, total: int | None = None, unit: str = "rows") -> Iterator[Callable[[int], None] | None]:
        """An ``update(n)`` callback drawing a progress bar on stderr (tqdm), or None."""
        if not enabled:
            yield None
            return
        out = getattr(self.stderr, "_out", sys.stderr)
        try:
            from tqdm import tqdm  # optional: the extra [progress]
        except ImportError:  # the optional extra is not installed: plain counters instead
            done = [0]

            def update(n: int) -> None:
                done[0] += n
                out.write(f"{done[0]}{f'/{total}' if total is not None else ''} {unit}\n")

            yield update
            return
        bar = tqdm(total=total, unit=f" {unit}", file=out, dynamic_ncols=True, mininterval=0.5)
        try:
            yield bar.update
        finally:
            bar.close()

    @staticmethod
    def partial(message: str) -> CommandError:
        """The error raised at the end of a run where some lines/rows failed (exit code 3)."""
        return CommandError(message, returncode=EXIT_PARTIAL)
