"""``manage.py cqrs_pull --url URL --cqrs-id ID``: seed or follow a replica model over HTTP pull."""

from __future__ import annotations

import contextlib
import os
import signal
from typing import Any
from urllib.parse import urlsplit

from django.core.management.base import CommandError, CommandParser

from dj_cqrs.http import pull
from dj_cqrs.http.client import PullClient, PullClientError
from dj_cqrs.management.base import (
    CqrsCommand,
    non_negative_int,
    non_negative_seconds,
    positive_int,
    positive_seconds,
)
from dj_cqrs.process.lifecycle import StopFlag
from dj_cqrs.registry import replica_registry


class Command(CqrsCommand):
    help = (
        "Pull a master model's rows, then its changes, over HTTP (GET <url>pull/<cqrs_id>/) and apply"
        " them to the replica model; the cursor is stored, so a restart resumes."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--url", required=True, help="The master's dj_cqrs mount, e.g. https://master/cqrs/"
        )
        self.add_cqrs_id(parser, side="replica")
        parser.add_argument(
            "--token-env",
            default="CQRS_PULL_TOKEN",
            help="Environment variable holding the bearer token (default CQRS_PULL_TOKEN)",
        )
        parser.add_argument(
            "--follow", action="store_true", help="Keep polling for changes until SIGTERM/SIGINT"
        )
        parser.add_argument(
            "--interval",
            type=non_negative_seconds,
            default=1.0,
            help="Seconds between polls once caught up (--follow; default 1)",
        )
        parser.add_argument(
            "--limit",
            type=positive_int,
            default=None,
            help="Items per page (default: the master's)",
        )
        parser.add_argument(
            "--timeout",
            type=positive_seconds,
            default=30.0,
            help="Seconds per HTTP request (default 30)",
        )
        parser.add_argument(
            "--retries",
            type=non_negative_int,
            default=5,
            help="Retries of an unreachable or failing (5xx) master (default 5)",
        )
        parser.add_argument(
            "--no-progress", action="store_true", help="No progress bar on the initial pass"
        )
        parser.add_argument(
            "--reset",
            action="store_true",
            help="Forget the stored cursor: start with a full snapshot",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        cqrs_id = options["cqrs_id"]
        url = urlsplit(options["url"])
        if url.scheme not in ("http", "https") or not url.netloc:
            raise CommandError(
                f"--url must be the master's http:// or https:// mount, got {options['url']!r}."
            )
        if replica_registry.get_model_by_cqrs_id(cqrs_id) is None:
            raise CommandError(f"No replica model has CQRS_ID {cqrs_id!r}.")
        token = os.environ.get(options["token_env"], "")
        if not token:
            raise CommandError(
                f"The bearer token is missing: set the environment variable {options['token_env']}."
            )
        stop = StopFlag()

        def _stop(signum: int, frame: Any) -> None:
            stop.set()

        previous = {
            signum: signal.signal(signum, _stop) for signum in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            self._pull(options, cqrs_id, token, stop)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _pull(self, options: dict[str, Any], cqrs_id: str, token: str, stop: StopFlag) -> None:
        client = PullClient(
            options["url"],
            token,
            timeout=options["timeout"],
            retries=max(options["retries"], 0),
            stop=stop,
        )
        with contextlib.ExitStack() as bars:
            row = pull.cursor_row(client.url, cqrs_id, options["reset"])
            update = None
            if not row.caught_up and not options["no_progress"]:
                update = bars.enter_context(self.progress(True, unit="items"))

            def on_page(items: int, caught_up: bool) -> None:
                nonlocal update
                if update is not None:
                    update(items)
                    if caught_up:
                        bars.close()
                        update = None

            try:
                result = pull.run(
                    client,
                    cqrs_id,
                    limit=options["limit"],
                    follow=options["follow"],
                    interval=options["interval"],
                    stop=stop,
                    on_page=on_page,
                )
            except (PullClientError, pull.ApplyFailed) as exc:
                hint = (
                    " Run cqrs_pull again with --reset."
                    if getattr(exc, "status", None) == 410
                    else ""
                )
                raise CommandError(f"cqrs_pull {cqrs_id} from {client.url}: {exc}.{hint}") from exc
        state = "caught up" if result.caught_up else "initial pass not finished"
        ending = " (stopped)" if result.stopped else ""
        self.stderr.write(
            f"{result.items} item(s) applied in {result.pages} page(s); {state}{ending}."
        )
