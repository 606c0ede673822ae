"""Service B's event handlers (imported by ``SinkConfig.ready()``).

Two overlapping patterns over the names service A emits (``order.created``, ``order.paid``,
``invoice.paid``): ``order.*`` and ``#.paid`` (``order.paid`` matches both), an ``ordered=True``
handler over all three, one over the challenge source's events, and three whose failures a test
controls: ``flaky.*`` fails on its first two attempts of an event, ``broken.*`` fails until the
``fixed`` switch is on, ``poison.*`` raises ``Permanent``; ``step.*`` is ordered and does what
the event's ``data["mode"]`` says (``fail:N``: fail the first N attempts, ``permanent``).
"""

import os

from dj_cqrs.events import Permanent, handler
from sink.models import Attempt, Handled, Switch


def record(label, event):
    Handled.objects.create(
        handler=label,
        event_id=event.id,
        name=event.name,
        key=event.key,
        seq=event.seq,
        retries=event.retries,
        pid=os.getpid(),
    )


def attempt(label, event):
    Attempt.objects.using("journal").create(
        handler=label, event_id=event.id, retries=event.retries, pid=os.getpid()
    )
    return Attempt.objects.using("journal").filter(handler=label, event_id=event.id).count()


@handler("order.*", name="sink.orders")
def orders(event):
    record("orders", event)


@handler("#.paid", name="sink.paid")
def paid(event):
    record("paid", event)


@handler("order.*", "invoice.*", ordered=True, name="sink.latest")
def latest(event):
    record("latest", event)


@handler("challenge.*", name="sink.challenges")
def challenges(event):
    record("challenges", event)


@handler("flaky.*", name="sink.flaky")
def flaky(event):
    attempts = attempt("flaky", event)
    record("flaky", event)  # rolled back with the transaction when the handler raises
    if attempts <= 2:
        raise RuntimeError(f"flaky failure {attempts} of 2 for {event.id}")


@handler("broken.*", name="sink.broken")
def broken(event):
    attempt("broken", event)
    if not Switch.objects.using("journal").filter(name="fixed", on=True).exists():
        raise RuntimeError(f"broken until fixed, event {event.key}")
    record("broken", event)


@handler("poison.*", name="sink.poison")
def poison(event):
    attempt("poison", event)
    raise Permanent(f"poison event {event.key} cannot be handled")


@handler("step.*", ordered=True, name="sink.steps")
def steps(event):
    attempts = attempt("steps", event)
    mode = event.data.get("mode", "ok")
    if mode == "permanent":
        raise Permanent(f"step {event.key}/{event.seq} refused")
    if mode.startswith("fail:") and attempts <= int(mode[5:]):
        raise RuntimeError(f"step failure {attempts} of {mode[5:]} for {event.key}/{event.seq}")
    record("steps", event)
