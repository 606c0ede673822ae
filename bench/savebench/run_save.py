"""What publishing costs the master, on the issue's realistic model (``benchapp.models``).

Runs under any Python whose ``dj_cqrs`` is dj_cqrs or django-cqrs 3.1.0 (the API is the same) and
prints one JSON object (the last line of stdout); progress goes to stderr.

``BENCH_MODE=main`` (default):

* single-row ``create()`` / ``save()`` of an update / ``delete()``, each in its own transaction
  (autocommit), of the plain model and of each CQRS model (``CqrsItem``; ``TrackedItem`` with
  ``CQRS_TRACKED_FIELDS``; dj_cqrs only: ``TriggerItem`` with ``CQRS_DB_TRIGGERS``), in blocks of
  BENCH_BLOCK operations of one kind, the kinds alternating in a rotating order so that a slow
  moment of the machine hits each (see ``schedule``); medians;
* ``cqrs.bulk_create`` of BENCH_BULK rows in batches of 500 against a plain ``bulk_create``;
* ``cqrs.bulk_update`` of the same number of rows against a plain ``QuerySet.update`` (which bumps
  the revision and the timestamp too); both bulk figures are medians of BENCH_BULK_ROUNDS rounds,
  plain and CQRS alternating, and after each CQRS round the script waits (untimed) until every
  event reached the sink queue, so a round does not pay for the previous round's publishing;
* dj_cqrs only, with BENCH_RELAY > 0: a backlog of BENCH_RELAY outbox events (written with
  ``outbox_publish = 'relay'``, so nothing publishes them meanwhile) drained by one
  ``Relay(min_age=0).run_once()`` with publisher confirms.

``BENCH_MODE=relay`` (dj_cqrs only): plain and ``CqrsItem`` saves only, with
``outbox_publish = 'relay'`` (nothing publishes in the saving process) while a second process runs
the relay loop of ``cqrs_relay`` (``BENCH_MODE=relayloop``: ``Relay(interval=0.01)`` until its stop
file appears), so that the publishing cost is still paid on the same machine, in another process.

``BENCH_MODE=observe`` (group ``observability``): plain and ``CqrsItem`` saves with the
observability hooks off, tracing on without a span, inside a sampled span, and metrics on (see
``observe``).

``BENCH_MODE=request``: plain and ``CqrsItem`` saves only, each operation wrapped in Django's
``request_started`` / ``request_finished`` signals as a web request would be (Django closes the
connection at both ends when it is older than ``CONN_MAX_AGE``: with 0, each operation opens a new
database connection); the timing includes the two signals.

Every published message is counted in a sink queue bound to the models' routing keys; a count
that differs from the events expected is reported in ``mismatches`` (and on stderr), as are row
counts and revisions that are not what the operations should have left.

Environment: BENCH_DB (database, created by the caller), BENCH_EXCHANGE, BENCH_MODE, BENCH_N
(operations per kind, default 1000), BENCH_BLOCK (50), BENCH_BULK (5000), BENCH_BULK_BATCH (500),
BENCH_BULK_ROUNDS (3), BENCH_RELAY (0 = skip), BENCH_CONN_MAX_AGE (``none`` or seconds; default
``none``), BENCH_SINK_TIMEOUT (seconds to wait for the sink, default 120).
"""

import functools
import importlib.util
import json
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import django
from django.conf import settings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
EXCHANGE = os.environ.get("BENCH_EXCHANGE", "bench_save")
MODE = os.environ.get("BENCH_MODE", "main")
_AGE = os.environ.get("BENCH_CONN_MAX_AGE", "none").lower()
CONN_MAX_AGE = None if _AGE == "none" else int(_AGE)
RABBIT_HOST = os.environ.get("BENCH_RABBIT_HOST", "127.0.0.1")
RABBIT_PORT = int(os.environ.get("BENCH_RABBIT_PORT", "5672"))
SINK_TIMEOUT = float(os.environ.get("BENCH_SINK_TIMEOUT", "120"))
BLOCK = int(os.environ.get("BENCH_BLOCK", "50"))
settings.configure(
    INSTALLED_APPS=["django.contrib.contenttypes", "dj_cqrs", "benchapp"],
    DATABASES={
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ["BENCH_DB"],
            "USER": "postgres",
            "HOST": os.environ.get("BENCH_DB_HOST", "127.0.0.1"),
            "PORT": int(os.environ.get("BENCH_DB_PORT", "5432")),
            "CONN_MAX_AGE": CONN_MAX_AGE,
        }
    },
    USE_TZ=True,
    DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    CQRS={
        "transport": "dj_cqrs.transport.RabbitMQTransport",
        "url": os.environ.get(
            "BENCH_AMQP_URL", f"amqp://guest:guest@{RABBIT_HOST}:{RABBIT_PORT}/%2F"
        ),
        "exchange": EXCHANGE,
        **({"master": {"outbox_publish": "relay"}} if MODE in ("relay", "relayloop") else {}),
    },
    LOGGING_CONFIG=None,
)
django.setup()

import pika  # noqa: E402
from benchapp.models import Category, CqrsItem, PlainItem, TrackedItem, TriggerItem  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.core.signals import request_finished, request_started  # noqa: E402
from django.db import connection  # noqa: E402
from django.db.models import F  # noqa: E402
from django.utils import timezone as dj_timezone  # noqa: E402

OURS = importlib.util.find_spec("dj_cqrs.master") is not None  # dj_cqrs, not django-cqrs
SINK = f"{EXCHANGE}_sink"
ROUTING_KEYS = [m.CQRS_ID for m in (CqrsItem, TrackedItem, TriggerItem)]
BASE_TIME = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
NAME = "Ärmel & Co. — product name padded to the column's full width " * 2
TEXT = "A 300-character description: lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 4
MISMATCHES: list[str] = []


def log(message: str) -> None:
    print(
        f"[save bench {'ours' if OURS else 'theirs'} {MODE} {time.strftime('%H:%M:%S')}] {message}",
        file=sys.stderr,
        flush=True,
    )


def mismatch(message: str) -> None:
    MISMATCHES.append(message)
    log(f"MISMATCH: {message}")


# -- the sink queue -----------------------------------------------------------------------------------


def _channel() -> tuple[object, object]:
    conn = pika.BlockingConnection(pika.ConnectionParameters(RABBIT_HOST, RABBIT_PORT))
    return conn, conn.channel()


def sink_declare() -> None:
    conn, channel = _channel()
    channel.exchange_declare(EXCHANGE, "topic", durable=True)
    channel.queue_declare(SINK, durable=True)
    for key in ROUTING_KEYS:
        channel.queue_bind(SINK, EXCHANGE, key)
    channel.queue_purge(SINK)
    conn.close()


CONSUMED = [0]  # messages taken out of the sink by diagnose()
SAMPLE = [0]  # bytes of the first message diagnose() took
EXCESS = [0]  # messages more (or fewer) than expected at a checkpoint already reported


def sink_published() -> int:
    """Messages published to the sink so far (those diagnose() took out included)."""
    conn, channel = _channel()  # a fresh connection: no heartbeat to keep alive between phases
    try:
        return channel.queue_declare(SINK, passive=True).method.message_count + CONSUMED[0]
    finally:
        conn.close()


def sink_count() -> int:
    """Messages published to the sink so far, less the excess of earlier checkpoints (reported
    once, not again at every later checkpoint)."""
    return sink_published() - EXCESS[0]


def diagnose() -> str:
    """Take every message out of the sink and say which were published more than once (same
    routing key, signal, primary key and revision)."""
    seen: Counter[tuple[str, str, str, object]] = Counter()
    conn, channel = _channel()
    try:
        waiting = channel.queue_declare(SINK, passive=True).method.message_count
        channel.basic_qos(prefetch_count=1000)
        for method, _props, body in channel.consume(SINK, auto_ack=True, inactivity_timeout=2):
            if method is None:
                break
            CONSUMED[0] += 1
            SAMPLE[0] = SAMPLE[0] or len(body)
            data = json.loads(body)
            revision = (data.get("instance_data") or {}).get("cqrs_revision")
            seen[
                (
                    method.routing_key,
                    str(data.get("signal_type")),
                    str(data.get("instance_pk")),
                    revision,
                )
            ] += 1
            waiting -= 1
            if waiting <= 0:
                break
        channel.cancel()
    finally:
        conn.close()
    duplicated: Counter[str] = Counter()
    for (key, signal, _pk, _revision), count in seen.items():
        if count > 1:
            duplicated[f"{key} {signal} revision {_revision}"] += count - 1
    if not duplicated:
        return f"no duplicate among the {sum(seen.values())} messages in the sink"
    listed = ", ".join(f"{name}: {count}" for name, count in sorted(duplicated.items()))
    return f"{sum(duplicated.values())} duplicates (same key, signal, pk, revision) among {sum(seen.values())}: {listed}"


def sink_sample_size() -> int:
    """Bytes of one message body in the sink (given back to the queue)."""
    conn, channel = _channel()
    try:
        method, _props, body = channel.basic_get(SINK)
        if method is None:
            return SAMPLE[0]
        channel.basic_nack(method.delivery_tag, requeue=True)
        return len(body)
    finally:
        conn.close()


def sink_delete() -> None:
    conn, channel = _channel()
    try:
        channel.queue_delete(SINK)
    finally:
        conn.close()


def wait_for_sink(expected: int, what: str) -> float:
    """Wait until the sink holds ``expected`` messages; return the seconds waited."""
    began = time.perf_counter()
    deadline = began + SINK_TIMEOUT
    count = sink_count()
    while count < expected and time.perf_counter() < deadline:
        time.sleep(0.02)
        count = sink_count()
    waited = time.perf_counter() - began
    if count != expected:
        time.sleep(0.5)  # a late duplicate shows here too
        count = sink_count()
        if count != expected:
            found = diagnose()
            mismatch(
                f"{what}: {expected} messages expected in the sink queue, {count} arrived; {found}"
            )
            EXCESS[0] += count - expected
    return waited


def check_rows(model: type, expected: int, what: str) -> None:
    count = model.objects.count()
    if count != expected:
        mismatch(f"{what}: {model.__name__} has {count} rows, {expected} expected")


# -- rows -----------------------------------------------------------------------------------------------


def item(model: type, i: int, category: Category) -> object:
    return model(
        value=i,
        name=f"{i:08d} {NAME}"[:100],
        text=f"{i:08d} {TEXT}"[:300],
        price=Decimal("1234.56") + i % 100,
        happened_at=BASE_TIME + timedelta(seconds=i),
        active=i % 2 == 0,
        category=category if i % 2 else None,
    )


def fields(i: int, category: Category) -> dict[str, object]:
    obj = item(PlainItem, i, category)
    return {
        f: getattr(obj, f)
        for f in ("value", "name", "text", "price", "happened_at", "active", "category")
    }


def rotate(kinds: list, i: int) -> list:
    k = i % len(kinds)
    return kinds[k:] + kinds[:k]


def schedule(kinds: list, n: int) -> Iterator[tuple[str, type, int]]:
    """``(kind, model, i)`` for ``i`` in ``range(n)`` and each kind, in blocks of BLOCK operations
    of one kind, the kinds in a rotating order. Blocks, not single operations, alternate: dj_cqrs
    publishes from a background thread, whose work slows whatever runs next in the process; in
    blocks, a CQRS save pays for the publishing of the saves before it (as in a busy service) and
    a plain save does not (but for the first few of a block)."""
    for number, start in enumerate(range(0, n, BLOCK)):
        for kind, model in rotate(kinds, number):
            for i in range(start, min(n, start + BLOCK)):
                yield kind, model, i


def median_us(values: list[float]) -> float:
    return statistics.median(values) * 1e6


def drain_dispatcher() -> None:
    """dj_cqrs: let the background publisher finish (best effort; the sink count is the check)."""
    if not OURS:
        return
    try:
        from dj_cqrs.master.dispatcher import dispatcher

        dispatcher.drain(SINK_TIMEOUT)
    except (ImportError, AttributeError):
        pass


# -- single-row operations ----------------------------------------------------------------------------------


def single_rows(
    kinds: list[tuple[str, type]],
    n: int,
    category: Category,
    wrap: bool,
    around=None,  # noqa: ANN001 - a context manager factory each operation runs (and is timed) in
) -> tuple[dict[str, float], int]:
    """create, update, delete ``n`` rows of each kind; medians (µs) and the events expected."""

    def timed(op):  # noqa: ANN001, ANN202
        if around is not None:
            start = time.perf_counter()
            with around():
                op()
            return time.perf_counter() - start
        if wrap:
            start = time.perf_counter()
            request_started.send(sender=None)
            op()
            request_finished.send(sender=None)
            return time.perf_counter() - start
        start = time.perf_counter()
        op()
        return time.perf_counter() - start

    times: dict[str, list[float]] = {
        f"{k}_{op}": [] for k, _ in kinds for op in ("create", "update", "delete")
    }
    pks: dict[str, list[int]] = {k: [] for k, _ in kinds}
    before = {kind: model.objects.count() for kind, model in kinds}
    began = time.perf_counter()
    for kind, model, i in schedule(kinds, n):
        obj = model(**fields(i, category))
        create = functools.partial(obj.save, force_insert=True)  # objects.create(), minus __init__
        times[f"{kind}_create"].append(timed(create))
        pks[kind].append(obj.pk)
    for kind, model in kinds:
        check_rows(model, before[kind] + n, f"after {n} creates")
    objects = {
        kind: list(model.objects.filter(pk__in=pks[kind]).order_by("pk")) for kind, model in kinds
    }
    for kind, _model, i in schedule(kinds, n):
        obj = objects[kind][i]
        obj.value += 1
        obj.active = not obj.active
        obj.price += 1
        times[f"{kind}_update"].append(timed(obj.save))
    for kind, model in kinds:
        if model is not PlainItem:
            wrong = model.objects.filter(pk__in=pks[kind]).exclude(cqrs_revision=1).count()
            if wrong:
                mismatch(
                    f"after one update of each row: {wrong} {model.__name__} rows not at revision 1"
                )
    for kind, _model, i in schedule(kinds, n):
        times[f"{kind}_delete"].append(timed(objects[kind][i].delete))
    for kind, model in kinds:
        check_rows(model, before[kind], f"after {n} deletes")
    log(
        f"{n} creates, updates and deletes of {', '.join(k for k, _ in kinds)} in {time.perf_counter() - began:.1f}s"
    )
    result = {f"{key}_us": median_us(values) for key, values in times.items()}
    events = 3 * n * sum(1 for _k, model in kinds if model is not PlainItem)
    return result, events


# -- bulk operations --------------------------------------------------------------------------------------


def bulk(
    bulk_rows: int, batch: int, rounds: int, category: Category, expected: int
) -> tuple[dict[str, float], int]:
    result: dict[str, float] = {}
    times: dict[str, list[float]] = {
        "plain_bulk_create": [],
        "cqrs_bulk_create": [],
        "plain_bulk_update": [],
        "cqrs_bulk_update": [],
    }
    drains: dict[str, list[float]] = {"bulk_create": [], "bulk_update": []}
    ranges: dict[str, tuple[int, int]] = {}
    before = {model: model.objects.count() for model in (PlainItem, CqrsItem)}
    for rnd in range(rounds):
        for model in rotate([PlainItem, CqrsItem], rnd):
            objs = [item(model, i, category) for i in range(bulk_rows)]
            if model is PlainItem:
                start = time.perf_counter()
                created = PlainItem.objects.bulk_create(objs, batch_size=batch)
                times["plain_bulk_create"].append(time.perf_counter() - start)
            else:
                start = time.perf_counter()
                created = CqrsItem.cqrs.bulk_create(objs, batch_size=batch)
                times["cqrs_bulk_create"].append(time.perf_counter() - start)
                expected += bulk_rows
                drains["bulk_create"].append(
                    wait_for_sink(expected, f"cqrs.bulk_create round {rnd + 1}")
                )
            pks = [o.pk for o in created]
            if None in pks:
                mismatch(f"{model.__name__} bulk_create returned objects without a primary key")
            else:
                ranges[model.__name__] = (min(pks), max(pks))
    check_rows(PlainItem, before[PlainItem] + bulk_rows * rounds, "after bulk_create")
    check_rows(CqrsItem, before[CqrsItem] + bulk_rows * rounds, "after cqrs.bulk_create")
    for rnd in range(rounds):
        for model in rotate([PlainItem, CqrsItem], rnd):
            queryset = model.objects.filter(pk__range=ranges[model.__name__])
            if model is PlainItem:
                start = time.perf_counter()
                queryset.update(
                    value=rnd, cqrs_revision=F("cqrs_revision") + 1, cqrs_updated=dj_timezone.now()
                )
                times["plain_bulk_update"].append(time.perf_counter() - start)
            else:
                start = time.perf_counter()
                CqrsItem.cqrs.bulk_update(queryset, value=rnd)
                times["cqrs_bulk_update"].append(time.perf_counter() - start)
                expected += bulk_rows
                drains["bulk_update"].append(
                    wait_for_sink(expected, f"cqrs.bulk_update round {rnd + 1}")
                )
    for model in (PlainItem, CqrsItem):
        rows = model.objects.filter(pk__range=ranges[model.__name__])
        good = rows.filter(cqrs_revision=rounds, value=rounds - 1).count()
        if good != bulk_rows:
            mismatch(
                f"after {rounds} bulk updates: {good} of {bulk_rows} {model.__name__} rows at revision {rounds}"
            )
    for key, values in times.items():
        result[f"{key}_s"] = statistics.median(values)
    for key, values in drains.items():
        result[f"{key}_drain_s"] = statistics.median(values)
    return result, expected


# -- relay -----------------------------------------------------------------------------------------------------


def relay_backlog(count: int, category: Category, expected: int) -> tuple[dict[str, float], int]:
    """Write a backlog of ``count`` outbox events with nothing publishing them, then time one
    relay pass publishing them all (publisher confirms on)."""
    from django.test import override_settings

    from dj_cqrs.master.relay import Relay
    from dj_cqrs.models import OutboxEvent

    deadline = time.perf_counter() + SINK_TIMEOUT
    while (
        OutboxEvent.objects.filter(published_at__isnull=True).exists()
        and time.perf_counter() < deadline
    ):
        time.sleep(0.1)  # the marks of what was published before (they may be written late)
    unmarked = OutboxEvent.objects.filter(published_at__isnull=True).count()
    if unmarked:
        mismatch(
            f"relay: {unmarked} outbox rows of the earlier phases are still unpublished (the relay will send them again)"
        )
    cqrs = {**settings.CQRS, "master": {"outbox_publish": "relay"}}
    with override_settings(CQRS=cqrs):
        began = time.perf_counter()
        for start in range(0, count, 5000):
            CqrsItem.cqrs.bulk_create(
                [item(CqrsItem, i, category) for i in range(start, min(count, start + 5000))],
                batch_size=500,
            )
        log(f"relay backlog of {count} events written in {time.perf_counter() - began:.1f}s")
        pending = OutboxEvent.objects.filter(published_at__isnull=True).count()
        if pending != count + unmarked:
            mismatch(f"relay backlog: {pending} unpublished outbox rows, {count} expected")
        in_sink = sink_count()
        if in_sink != expected:
            mismatch(
                f"relay backlog: the sink holds {in_sink} messages before the relay ran, {expected} expected"
            )
        began = time.perf_counter()
        published = Relay(min_age=0).run_once()
        elapsed = time.perf_counter() - began
    expected += count + unmarked
    wait_for_sink(expected, "relay")
    if published != count + unmarked:
        mismatch(
            f"relay: run_once() reported {published} events published, {count + unmarked} expected"
        )
    left = OutboxEvent.objects.filter(published_at__isnull=True).count()
    if left:
        mismatch(f"relay: {left} outbox rows still unpublished after the pass")
    return {
        "relay_events": float(count),
        "relay_published": float(published),
        "relay_s": elapsed,
        "relay_events_per_s": published / elapsed,
    }, expected


def relay_loop() -> None:
    """``BENCH_MODE=relayloop``: what ``manage.py cqrs_relay --interval 0.01`` does, until the
    file named by BENCH_RELAY_STOP exists."""
    from dj_cqrs.master.relay import Relay

    stop_file = os.environ["BENCH_RELAY_STOP"]
    relay = Relay(interval=0.01)
    published = 0
    while not os.path.exists(stop_file):
        done = relay.run_once()
        published += done
        if not done:
            time.sleep(0.01)
    published += relay.run_once()
    log(f"relay process published {published} events")


def start_relay_process() -> tuple[object, str]:
    import subprocess
    import tempfile

    stop_file = os.path.join(tempfile.mkdtemp(prefix="bench_relay_"), "stop")
    env = {**os.environ, "BENCH_MODE": "relayloop", "BENCH_RELAY_STOP": stop_file}
    return subprocess.Popen([sys.executable, os.path.abspath(__file__)], env=env), stop_file


def observe(kinds: list[tuple[str, type]], n: int, category: Category) -> tuple[dict, int]:
    """``BENCH_MODE=observe`` (issue 15): plain and master saves with the observability hooks in
    each state, one pass per state in this process: ``off`` (``CQRS['tracing'] = False``,
    ``CQRS['metrics'] = False``), ``tracing`` (opentelemetry-api installed and on, no span active:
    what every save of a service that does not trace pays), ``span`` (each operation, plain ones
    too, inside a sampled span of an OpenTelemetry SDK provider with no exporter: the context is
    stored with each event), ``metrics`` (``CQRS['metrics'] = True``: Prometheus counters in the
    publishing path). django-cqrs has none of these: it runs the ``off`` pass only."""
    import contextlib

    from django.test import override_settings

    result: dict[str, float] = {}
    events = 0
    states = ["off", "tracing", "span", "metrics"] if OURS else ["off"]
    tracer = None
    if "span" in states:
        try:
            from opentelemetry import trace
            from opentelemetry.sdk.trace import TracerProvider
        except ImportError:
            states.remove("span")
            log("observe: opentelemetry-sdk is not installed: no 'span' pass")
        else:
            trace.set_tracer_provider(TracerProvider())
            tracer = trace.get_tracer("bench")
    def run_state(state: str, count: int) -> tuple[dict[str, float], int]:
        cqrs = dict(settings.CQRS)
        cqrs["tracing"] = state in ("tracing", "span")
        cqrs["metrics"] = state == "metrics"
        around = None
        if state == "span":

            def around():  # noqa: ANN202
                return tracer.start_as_current_span("request")  # type: ignore[union-attr]

        with override_settings(CQRS=cqrs) if OURS else contextlib.nullcontext():
            figures, expected = single_rows(kinds, count, category, wrap=False, around=around)
            drain_dispatcher()
        return figures, expected

    # A warm-up pass of every state (untimed), then ROUNDS rounds of every state in a rotating
    # order (a slow moment of the machine hits each); the figure is the median of the rounds'
    # medians.
    rounds = max(int(os.environ.get("BENCH_OBSERVE_ROUNDS", "4")), 1)
    per_round = max(n // rounds, 10)
    for state in states:
        events += run_state(state, 10)[1]
    collected: dict[str, list[float]] = {}
    for r in range(rounds):
        for state in rotate(states, r):
            figures, expected = run_state(state, per_round)
            events += expected
            for key, value in figures.items():
                collected.setdefault(f"{state}_{key}", []).append(value)
    result = {key: statistics.median(values) for key, values in collected.items()}
    return result, events


def main() -> None:
    if MODE == "relayloop":
        relay_loop()
        return
    if MODE == "observe":
        n = int(os.environ.get("BENCH_N", "1000"))
        call_command("migrate", verbosity=0, run_syncdb=True)
        sink_declare()
        result: dict[str, object] = {"ours": OURS, "mode": MODE, "n": n}
        try:
            category = Category.objects.create(name="category")
            figures, expected = observe([("plain", PlainItem), ("cqrs", CqrsItem)], n, category)
            result.update(figures)
            result["saves_drain_s"] = wait_for_sink(expected, "single-row saves")
            result["sink_expected"] = expected
            result["sink_count"] = sink_published()
        finally:
            result["mismatches"] = MISMATCHES
            sink_delete()
            connection.close()
        print(json.dumps(result))
        return
    n = int(os.environ.get("BENCH_N", "1000"))
    bulk_rows = int(os.environ.get("BENCH_BULK", "5000"))
    batch = int(os.environ.get("BENCH_BULK_BATCH", "500"))
    rounds = int(os.environ.get("BENCH_BULK_ROUNDS", "3"))
    relay_events = int(os.environ.get("BENCH_RELAY", "0"))
    call_command("migrate", verbosity=0, run_syncdb=True)
    sink_declare()
    result: dict[str, object] = {"ours": OURS, "mode": MODE, "conn_max_age": _AGE, "n": n}
    try:
        category = Category.objects.create(name="category")
        kinds: list[tuple[str, type]] = [("plain", PlainItem), ("cqrs", CqrsItem)]
        if MODE == "main":
            kinds.append(("tracked", TrackedItem))
            if OURS:
                kinds.append(("trigger", TriggerItem))
        relay_process = start_relay_process() if MODE == "relay" else None
        try:
            figures, expected = single_rows(kinds, n, category, wrap=MODE == "request")
        finally:
            if relay_process is not None:
                process, stop_file = relay_process
                open(stop_file, "w").close()
                process.wait(timeout=SINK_TIMEOUT)  # type: ignore[attr-defined]
        result.update(figures)
        drain_dispatcher()
        result["saves_drain_s"] = wait_for_sink(expected, "single-row saves")
        result["wire_bytes"] = sink_sample_size()
        if MODE == "main":
            figures, expected = bulk(bulk_rows, batch, rounds, category, expected)
            result.update(figures)
            result["bulk_rows"] = bulk_rows
            result["bulk_batch"] = batch
            if OURS and relay_events:
                try:
                    figures, expected = relay_backlog(relay_events, category, expected)
                    result.update(figures)
                except Exception as exc:  # noqa: BLE001 - the outbox API may change under us: report it
                    mismatch(f"relay phase failed: {exc!r}")
                    expected = sink_count()  # what the failed phase published is not counted
        drain_dispatcher()
        result["sink_expected"] = expected
        result["sink_count"] = sink_published()
        if sink_count() != expected:
            mismatch(
                f"at the end: {expected} messages expected in the sink queue, {sink_count()} arrived (excess reported above not counted)"
            )
    finally:
        result["mismatches"] = MISMATCHES
        sink_delete()
        connection.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
