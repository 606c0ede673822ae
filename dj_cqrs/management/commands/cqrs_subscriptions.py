"""``manage.py cqrs_subscriptions``: manage webhook subscriptions (subscribe by URL)."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from dj_cqrs.management.base import cqrs_id_flags
from dj_cqrs.webhooks import subscriptions
from dj_cqrs.webhooks.subscriptions import SubscriptionError


class Command(BaseCommand):
    help = "Manage webhook subscriptions: add, list, remove, pause, resume, failures, replay."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--database", default="default", help="Database alias of the outbox (default: default)."
        )
        sub = parser.add_subparsers(dest="action", required=True)
        add = sub.add_parser("add", help="Subscribe a URL to changes.")
        add.add_argument("name")
        add.add_argument("url")
        add.add_argument(
            *cqrs_id_flags(),
            action="append",
            dest="cqrs_ids",
            default=[],
            help="A master model's CQRS_ID (repeatable).",
        )
        add.add_argument(
            "--events",
            action="append",
            dest="patterns",
            default=[],
            help="A domain event name pattern, e.g. order.* (repeatable).",
        )
        add.add_argument(
            "--secret",
            default=None,
            help="The signing secret (default: generated and printed once).",
        )
        add.add_argument(
            "--from-start",
            action="store_true",
            help="Deliver every change still in the outbox, not only new ones.",
        )
        listing = sub.add_parser("list", help="List subscriptions.")
        listing.add_argument("--json", action="store_true", help="One JSON document.")
        for action, text in (
            ("remove", "Delete a subscription."),
            ("pause", "Stop delivering."),
            ("resume", "Deliver again."),
        ):
            sub.add_parser(action, help=text).add_argument("name")
        fails = sub.add_parser(
            "failures", help="List parked deliveries (failed, held, queued for replay)."
        )
        fails.add_argument("name", nargs="?")
        fails.add_argument("--json", action="store_true", help="One JSON document.")
        again = sub.add_parser("replay", help="Deliver failed deliveries again.")
        again.add_argument("name")
        again.add_argument(
            "--id", type=int, action="append", dest="ids", help="A delivery id (repeatable)."
        )
        again.add_argument(
            "--all", action="store_true", help="Every failed delivery of the subscription."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        using = options["database"]
        action = options["action"]
        try:
            getattr(self, f"_{action}")(using, options)
        except SubscriptionError as exc:
            raise CommandError(str(exc)) from None

    def _add(self, using: str, options: dict[str, Any]) -> None:
        sub = subscriptions.add(
            options["name"],
            options["url"],
            options["cqrs_ids"],
            options["patterns"],
            secret=options["secret"],
            using=using,
            from_start=options["from_start"],
        )
        self.stdout.write(
            f"Added subscription {sub.name!r} -> {sub.url} from position {sub.position}."
        )
        if options["secret"] is None:
            self.stdout.write(f"Secret (shown once): {sub.secret}")

    def _list(self, using: str, options: dict[str, Any]) -> None:
        rows = subscriptions.listing(using)
        if options["json"]:
            self.stdout.write(json.dumps(rows, indent=2))
            return
        for row in rows:
            state = "active" if row["active"] else "paused"
            what = ", ".join(row["cqrs_ids"] + [f"events {p}" for p in row["event_patterns"]])
            self.stdout.write(
                f"{row['name']}\t{state}\t{row['url']}\t{what}\tposition {row['position']}"
                f"\tlag {row['lag']}\tfailed {row['failed']}\theld {row['held']}\treplay {row['replay']}"
            )

    def _remove(self, using: str, options: dict[str, Any]) -> None:
        subscriptions.remove(options["name"], using)
        self.stdout.write(f"Removed subscription {options['name']!r}.")

    def _pause(self, using: str, options: dict[str, Any]) -> None:
        subscriptions.set_active(options["name"], False, using)
        self.stdout.write(f"Paused subscription {options['name']!r}.")

    def _resume(self, using: str, options: dict[str, Any]) -> None:
        subscriptions.set_active(options["name"], True, using)
        self.stdout.write(f"Resumed subscription {options['name']!r}.")

    def _failures(self, using: str, options: dict[str, Any]) -> None:
        rows = [
            {
                "id": d.id,
                "subscription": d.subscription.name,
                "status": d.status,
                "cqrs_id": d.cqrs_id,
                "key": d.object_key,
                "event_id": d.event_id,
                "position": d.position,
                "attempts": d.attempts,
                "last_status": d.last_status,
                "last_error": d.last_error,
                "updated_at": d.updated_at.isoformat(),
            }
            for d in subscriptions.failures(options["name"], using)
        ]
        if options["json"]:
            self.stdout.write(json.dumps(rows, indent=2))
            return
        for row in rows:
            self.stdout.write(
                f"{row['id']}\t{row['subscription']}\t{row['status']}\t{row['cqrs_id']}\t{row['key']}"
                f"\tattempts {row['attempts']}\t{row['last_error']}"
            )
        self.stderr.write(f"{len(rows)} parked delivery(ies).")

    def _replay(self, using: str, options: dict[str, Any]) -> None:
        if not options["all"] and not options["ids"]:
            raise CommandError("give --id N (repeatable) or --all")
        count = subscriptions.replay(
            options["name"], None if options["all"] else options["ids"], using
        )
        self.stdout.write(f"Queued {count} delivery(ies) of {options['name']!r} for replay.")
