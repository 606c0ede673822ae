"""What emitting domain events costs, and how fast they are published (dj_cqrs only: django-cqrs
3.1.0 has no domain events). Prints one JSON object (the last line of stdout); progress goes to
stderr. Run by ``bench/workloads/events.py`` with the project of this directory
(``settings_events``) against a fresh database.

Phases, in this order (the dispatcher's sweep would publish rows left pending by a relay-mode phase,
so the phases that publish at commit come first):

1. ``cost``: four kinds of operation, BENCH_N of each (default 1000), in blocks of BENCH_BLOCK (50)
   operations of one kind in a rotating order (as the outbox group does, so that a slow moment of
   the machine hits each kind, and the background publisher's work after an emit is paid by the
   emits after it, not by the plain saves): ``txn_plain`` - ``transaction.atomic()`` around one
   ``save(force_insert=True)`` of a ``PlainItem`` (the outbox group's plain row); ``txn_emit`` - the
   same transaction with one ``emit("order.created", <the row's pk>, <5 fields>)`` after the
   save; ``auto_plain`` - the same ``save()`` in autocommit; ``auto_emit`` - ``emit()`` alone in
   autocommit. Default publishing (the dispatcher's thread, publisher confirms). Medians;
2. ``publish``: BENCH_PUBLISH_EVENTS (5000) autocommit emits, one after the other, timed from the
   first emit until all of them are in the sink queue (bound to ``dj_cqrs.event.#``);
3. ``cost_relay`` (BENCH_RELAY_MODE_N, default = BENCH_N; 0 skips): phase 1 again with
   ``outbox_publish = 'relay'``: what writing the event costs, nothing publishing in the process;
4. ``relay``: a backlog of BENCH_RELAY_EVENTS (50000) events, written with
   ``outbox_publish = 'relay'`` in transactions of 1000 (10 events per key), then one
   ``Relay(min_age=0).run_once()`` with publisher confirms (it also publishes phase 3's rows).

Every event is counted in the sink queue; counts, rows and sequences that are not what the
phases should have left are reported in ``mismatches`` (and on stderr). Environment: BENCH_DB,
BENCH_EXCHANGE, BENCH_N, BENCH_BLOCK, BENCH_PUBLISH_EVENTS, BENCH_RELAY_MODE_N,
BENCH_RELAY_EVENTS, BENCH_SINK_TIMEOUT (seconds, 120), BENCH_PROFILE (a file: cProfile of phase 1's
``txn_emit`` operations written there).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings_events")

import django  # noqa: E402

django.setup()

import pika  # noqa: E402
from benchapp.models import Category, PlainItem  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test import override_settings  # noqa: E402

from dj_cqrs.events import emit  # noqa: E402
from dj_cqrs.master.dispatcher import dispatcher  # noqa: E402
from dj_cqrs.master.relay import Relay  # noqa: E402
from dj_cqrs.models import OutboxEvent  # noqa: E402

EXCHANGE = settings.CQRS["exchange"]
SINK = f"{EXCHANGE}_events_sink"
RABBIT = (
    os.environ.get("BENCH_RABBIT_HOST", "127.0.0.1"),
    int(os.environ.get("BENCH_RABBIT_PORT", "5672")),
)
SINK_TIMEOUT = float(os.environ.get("BENCH_SINK_TIMEOUT", "120"))
BLOCK = int(os.environ.get("BENCH_BLOCK", "50"))
BASE_TIME = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
NAME = "Ärmel & Co. — product name padded to the column's full width " * 2
TEXT = "A 300-character description: lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 4
KINDS = ("txn_plain", "txn_emit", "auto_plain", "auto_emit")
MISMATCHES: list[str] = []


def log(message: str) -> None:
    print(f"[events bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def mismatch(message: str) -> None:
    MISMATCHES.append(message)
    log(f"MISMATCH: {message}")


# -- the sink queue -------------------------------------------------------------------------------------


def _channel() -> tuple[Any, Any]:
    conn = pika.BlockingConnection(pika.ConnectionParameters(*RABBIT))
    return conn, conn.channel()


def sink_declare() -> None:
    conn, channel = _channel()
    try:
        channel.exchange_declare(EXCHANGE, "topic", durable=True)
        channel.queue_declare(SINK, durable=True)
        channel.queue_bind(SINK, EXCHANGE, "dj_cqrs.event.#")
        channel.queue_purge(SINK)
    finally:
        conn.close()


def sink_count() -> int:
    conn, channel = _channel()
    try:
        return int(channel.queue_declare(SINK, passive=True).method.message_count)
    finally:
        conn.close()


def sink_sample() -> tuple[int, str]:
    """Bytes and routing key of one message in the sink (given back to the queue)."""
    conn, channel = _channel()
    try:
        method, _props, body = channel.basic_get(SINK)
        if method is None:
            return 0, ""
        channel.basic_nack(method.delivery_tag, requeue=True)
        return len(body), method.routing_key
    finally:
        conn.close()


def sink_delete() -> None:
    conn, channel = _channel()
    try:
        channel.queue_delete(SINK)
    finally:
        conn.close()


def wait_for_sink(expected: int, what: str, poll: float = 0.02) -> float:
    """Wait until the sink holds ``expected`` messages; the seconds waited."""
    began = time.perf_counter()
    deadline = began + SINK_TIMEOUT
    count = sink_count()
    while count < expected and time.perf_counter() < deadline:
        time.sleep(poll)
        count = sink_count()
    waited = time.perf_counter() - began
    if count != expected:
        time.sleep(0.5)
        count = sink_count()
        if count != expected:
            mismatch(f"{what}: {expected} messages expected in the sink queue, {count} arrived")
    return waited


# -- operations ---------------------------------------------------------------------------------------------


def plain_row(i: int, category: Category) -> PlainItem:
    return PlainItem(
        value=i,
        name=f"{i:08d} {NAME}"[:100],
        text=f"{i:08d} {TEXT}"[:300],
        price=Decimal("1234.56") + i % 100,
        happened_at=BASE_TIME + timedelta(seconds=i),
        active=i % 2 == 0,
        category=category if i % 2 else None,
    )


def event_data(i: int) -> dict[str, Any]:
    """A small event: five fields (an integer, a decimal, two strings, an aware datetime)."""
    return {
        "order_id": i,
        "amount": Decimal("1234.56") + i % 100,
        "currency": "EUR",
        "customer": f"customer-{i % 977:04d}",
        "placed_at": BASE_TIME + timedelta(seconds=i),
    }


def operations(category: Category, prefix: str) -> dict[str, Callable[[int], None]]:
    """The four kinds of phase 1 (see the module docstring); ``prefix`` keeps keys apart."""

    def txn_plain(i: int) -> None:
        with transaction.atomic():
            plain_row(i, category).save(force_insert=True)

    def txn_emit(i: int) -> None:
        with transaction.atomic():
            row = plain_row(i, category)
            row.save(force_insert=True)
            emit("order.created", f"{prefix}{row.pk}", event_data(i))

    def auto_plain(i: int) -> None:
        plain_row(i, category).save(force_insert=True)

    def auto_emit(i: int) -> None:
        emit("order.paid", f"{prefix}a{i}", event_data(i))

    return {
        "txn_plain": txn_plain,
        "txn_emit": txn_emit,
        "auto_plain": auto_plain,
        "auto_emit": auto_emit,
    }


def schedule(n: int) -> Iterator[tuple[str, int]]:
    """``(kind, i)``: blocks of BLOCK operations of one kind, the kinds in a rotating order."""
    for number, start in enumerate(range(0, n, BLOCK)):
        k = number % len(KINDS)
        for kind in KINDS[k:] + KINDS[:k]:
            for i in range(start, min(n, start + BLOCK)):
                yield kind, i


def cost(n: int, category: Category, prefix: str, profile: str | None = None) -> dict[str, float]:
    """Phase 1 (or 3): medians in µs per kind."""
    ops = operations(category, prefix)
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
    began = time.perf_counter()
    for kind, i in schedule(n):
        op = ops[kind]
        if profiler is not None and kind == "txn_emit":
            profiler.enable()
            start = time.perf_counter()
            op(i)
            elapsed = time.perf_counter() - start
            profiler.disable()
        else:
            start = time.perf_counter()
            op(i)
            elapsed = time.perf_counter() - start
        times[kind].append(elapsed)
    log(f"{n} operations of each of {', '.join(KINDS)} in {time.perf_counter() - began:.1f}s")
    if profiler is not None and profile:
        profiler.dump_stats(profile)
    return {f"{kind}_us": statistics.median(values) * 1e6 for kind, values in times.items()}


# -- phases -------------------------------------------------------------------------------------------------------


def publish_phase(count: int, expected: int) -> dict[str, float]:
    """Phase 2: ``count`` autocommit emits; seconds until all are in the sink."""
    began = time.perf_counter()
    for i in range(count):
        emit("order.shipped", f"p{i}", event_data(i))
    emitted = time.perf_counter() - began
    wait_for_sink(expected + count, "publish phase", poll=0.005)
    elapsed = time.perf_counter() - began
    log(f"{count} emits in {emitted:.2f}s, all in the sink after {elapsed:.2f}s")
    return {
        "publish_events": float(count),
        "publish_emit_s": emitted,
        "publish_s": elapsed,
        "publish_events_per_s": count / elapsed,
    }


def pending() -> int:
    return OutboxEvent.objects.filter(published_at__isnull=True).count()


def relay_phase(count: int, expected: int, left_pending: int) -> dict[str, float]:
    """Phase 4: a backlog of ``count`` events (plus the ``left_pending`` of phase 3), one relay pass."""
    began = time.perf_counter()
    for start in range(0, count, 1000):
        with transaction.atomic():
            for i in range(start, min(count, start + 1000)):
                emit("order.refunded", f"r{i % max(1, count // 10)}", event_data(i))
    log(f"relay backlog of {count} events written in {time.perf_counter() - began:.1f}s")
    waiting = pending()
    if waiting != count + left_pending:
        mismatch(
            f"relay backlog: {waiting} unpublished outbox rows, {count + left_pending} expected"
        )
    if sink_count() != expected:
        mismatch(
            f"relay backlog: the sink holds {sink_count()} messages before the relay ran, {expected} expected"
        )
    began = time.perf_counter()
    published = Relay(min_age=0).run_once()
    elapsed = time.perf_counter() - began
    wait_for_sink(expected + waiting, "relay")
    if published != waiting:
        mismatch(f"relay: run_once() reported {published} events published, {waiting} expected")
    left = pending()
    if left:
        mismatch(f"relay: {left} outbox rows still unpublished after the pass")
    return {
        "relay_events": float(count),
        "relay_published": float(published),
        "relay_s": elapsed,
        "relay_events_per_s": published / elapsed,
    }


def check_sequences(expected_rows: int) -> None:
    """Every event row has its key's sequence number: per key 1..n, no gap, no repeat."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), count(DISTINCT (object_pk, revision)),"
            " count(*) FILTER (WHERE revision > (SELECT s.seq FROM dj_cqrs_event_sequence s WHERE s.key = o.object_pk))"
            " FROM dj_cqrs_outbox o WHERE signal_type = 'EVENT'"
        )
        rows, distinct, beyond = cursor.fetchone()
        cursor.execute("SELECT coalesce(sum(seq), 0) FROM dj_cqrs_event_sequence")
        total = cursor.fetchone()[0]
    if rows != expected_rows or distinct != rows or beyond or total != rows:
        mismatch(
            f"sequences: {rows} event rows ({expected_rows} expected), {distinct} distinct (key, seq),"
            f" {beyond} beyond their key's sequence, sequences sum to {total}"
        )


def main() -> None:
    n = int(os.environ.get("BENCH_N", "1000"))
    publish_events = int(os.environ.get("BENCH_PUBLISH_EVENTS", "5000"))
    relay_mode_n = int(os.environ.get("BENCH_RELAY_MODE_N", str(n)))
    relay_events = int(os.environ.get("BENCH_RELAY_EVENTS", "50000"))
    profile = os.environ.get("BENCH_PROFILE") or None
    call_command("migrate", verbosity=0, run_syncdb=True)
    sink_declare()
    result: dict[str, Any] = {"n": n}
    expected = 0
    try:
        category = Category.objects.create(name="category")
        if n:
            result.update(cost(n, category, "c", profile))
            expected += 2 * n
            dispatcher.drain(SINK_TIMEOUT)
            result["cost_drain_s"] = wait_for_sink(expected, "cost phase")
            result["wire_bytes"], result["routing_key"] = sink_sample()
        if publish_events:
            result.update(publish_phase(publish_events, expected))
            expected += publish_events
        dispatcher.drain(SINK_TIMEOUT)
        left_pending = pending()
        if left_pending:
            mismatch(
                f"{left_pending} outbox rows unpublished after the phases that publish at commit"
            )
        cqrs = {
            **settings.CQRS,
            "master": {**settings.CQRS.get("master", {}), "outbox_publish": "relay"},
        }
        with override_settings(CQRS=cqrs):
            if relay_mode_n:
                result.update(
                    {f"relaymode_{k}": v for k, v in cost(relay_mode_n, category, "m").items()}
                )
                left_pending = pending()
                if left_pending != 2 * relay_mode_n:
                    mismatch(
                        f"relay mode: {left_pending} unpublished rows, {2 * relay_mode_n} expected"
                    )
            if relay_events:
                result.update(relay_phase(relay_events, expected, left_pending))
                expected += relay_events + left_pending
        check_sequences(2 * n + publish_events + 2 * relay_mode_n + relay_events)
        plain_rows = PlainItem.objects.count()
        if plain_rows != 3 * n + 3 * relay_mode_n:
            mismatch(f"{plain_rows} PlainItem rows, {3 * n + 3 * relay_mode_n} expected")
        result["sink_expected"] = expected
        result["sink_count"] = sink_count()
        if result["sink_count"] != expected:
            mismatch(
                f"at the end: {expected} messages expected in the sink, {result['sink_count']}"
            )
    finally:
        result["mismatches"] = MISMATCHES
        dispatcher.drain(5)
        sink_delete()
        connection.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
