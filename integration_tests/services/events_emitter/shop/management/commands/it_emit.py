"""Emit a deterministic stream of domain events in transactions that also write rows.

Transaction ``t`` (0, 1, ...) emits ``--per-tx`` events whose names and keys come from a random
generator seeded with ``(--seed, t)``, so a run that was killed and is started again with
``--resume`` goes on with the same stream where the committed (or rolled-back) ones end. Every
``--rollback-every``-th transaction raises after emitting and is rolled back; its event ids are
recorded through the autocommit "journal" connection. ``--crash-at-tx T``: transaction ``T``
SIGKILLs the process right after its COMMIT, before any other commit hook (publishing) runs.
Prints ``{"committed": n, "rolled_back": m}`` (this run's events).
"""

import json
import math
import os
import random
import signal
import time
from decimal import Decimal

from django.core.management.base import BaseCommand
from django.db import transaction
from django.db.models import F, Max

from dj_cqrs.events import emit
from shop.models import Emitted, Order, RolledBack

NAMES = ("order.created", "order.paid", "invoice.paid")


class Rollback(Exception):
    pass


class Command(BaseCommand):
    def add_arguments(self, parser):
        parser.add_argument("--events", type=int, required=True)
        parser.add_argument("--keys", type=int, required=True)
        parser.add_argument("--per-tx", type=int, default=10)
        parser.add_argument("--rollback-every", type=int, default=7)
        parser.add_argument("--seed", default="1")
        parser.add_argument("--resume", action="store_true")
        parser.add_argument("--crash-at-tx", type=int, default=None)
        parser.add_argument("--pause", type=float, default=0.0, help="seconds between transactions")

    def handle(self, *args, **options):
        per_tx = options["per_tx"]
        every = options["rollback_every"]
        start = 0
        if options["resume"]:
            done = [
                Emitted.objects.aggregate(m=Max("tx"))["m"],
                RolledBack.objects.using("journal").aggregate(m=Max("tx"))["m"],
            ]
            start = 1 + max([-1, *[m for m in done if m is not None]])
        committed = rolled_back = 0
        for tx in range(start, math.ceil(options["events"] / per_tx)):
            rng = random.Random(f"{options['seed']}:{tx}")
            rollback = every > 0 and tx % every == every - 1
            events = []
            try:
                with transaction.atomic():
                    if tx == options["crash_at_tx"] and not rollback:
                        transaction.on_commit(lambda: os.kill(os.getpid(), signal.SIGKILL))
                    for i in range(per_tx):
                        name = rng.choice(NAMES)
                        key = f"k{rng.randrange(options['keys'])}"
                        Order.objects.get_or_create(key=key)
                        Order.objects.filter(key=key).update(updates=F("updates") + 1)
                        data = {"tx": tx, "i": i, "amount": Decimal(rng.randrange(1, 10**6)) / 100}
                        event_id = emit(name, key, data)
                        events.append({"event_id": event_id, "name": name, "key": key, "tx": tx})
                    if rollback:
                        raise Rollback
                    Emitted.objects.bulk_create([Emitted(**item) for item in events])
                committed += len(events)
            except Rollback:
                RolledBack.objects.using("journal").bulk_create(
                    [RolledBack(**item) for item in events]
                )
                rolled_back += len(events)
            if options["pause"]:
                time.sleep(options["pause"])
        self.stdout.write(json.dumps({"committed": committed, "rolled_back": rolled_back}))
