"""Service B's event handlers (imported by ``SinkConfig.ready()``).

Two overlapping patterns over the names service A emits (``order.created``, ``order.paid``,
``invoice.paid``): ``order.*`` and ``#.paid`` (``order.paid`` matches both), an ``ordered=True``
handler over all three, one over the challenge source's events, and three whose failures a test
controls: ``flaky.*`` fails on its first two attempts of an event, ``broken.*`` fails until the
``fixed`` switch is on, ``poison.*`` raises ``Permanent``.
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
