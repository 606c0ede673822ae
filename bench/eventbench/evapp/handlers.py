"""The handler of the consuming service, chosen by ``BENCH_EVENTS_HANDLER``:

* ``atomic``: ``@handler("order.*")`` inserting one :class:`~evapp.models.HandledOrder` row, in the
  transaction of its inbox row (exactly once);
* ``noop``: ``@handler("order.*", atomic=False)`` doing nothing: what the inbox alone costs
  (the lookup before, the row after);
* unset or ``none``: no handler (the emitting process).
"""

import os
from decimal import Decimal

from dj_cqrs.events import Event, handler


def insert_row(event: Event) -> None:
    from evapp.models import HandledOrder

    HandledOrder.objects.create(
        event_id=event.id,
        key=event.key,
        seq=event.seq,
        amount=Decimal(str(event.data["amount"])),
        customer=event.data["customer"],
    )


def do_nothing(event: Event) -> None:
    return None


def register() -> None:
    kind = os.environ.get("BENCH_EVENTS_HANDLER", "none")
    if kind == "atomic":
        handler("order.*", name="bench.insert_row")(insert_row)
    elif kind == "noop":
        handler("order.*", name="bench.noop", atomic=False)(do_nothing)
    elif kind != "none":
        raise ValueError(f"BENCH_EVENTS_HANDLER must be atomic, noop or none, got {kind!r}")
