"""Save overhead of a CQRS master model against the same model without CQRS.

Runs under any Python whose ``dj_cqrs`` is dj_cqrs or django-cqrs (the API is the same). Each
operation is timed on its own; plain and CQRS operations alternate, so a slow moment of the machine
hits both. Prints one JSON object: medians in microseconds and ratios.

Environment: BENCH_DB (database name, created by the caller), BENCH_EXCHANGE, BENCH_N (default 2000),
BENCH_BULK (rows for the bulk update, default 5000), BENCH_RELAY (events for the relay backlog,
dj_cqrs only, default 0 = skip).
"""

import importlib.util
import json
import os
import statistics
import sys
import time

import django
from django.conf import settings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
EXCHANGE = os.environ.get("BENCH_EXCHANGE", "bench_save")
settings.configure(
    INSTALLED_APPS=["django.contrib.contenttypes", "dj_cqrs", "benchapp"],
    DATABASES={
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ["BENCH_DB"],
            "USER": "postgres",
            "HOST": os.environ.get("BENCH_DB_HOST", "127.0.0.1"),
            "PORT": int(os.environ.get("BENCH_DB_PORT", "5432")),
        }
    },
    USE_TZ=True,
    DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    CQRS={
        "transport": "dj_cqrs.transport.RabbitMQTransport",
        "url": os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"),
        "exchange": EXCHANGE,
    },
    LOGGING_CONFIG=None,
)
django.setup()

import pika  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db.models import F  # noqa: E402

from benchapp.models import CqrsItem, PlainItem, TriggerItem  # noqa: E402

OURS = importlib.util.find_spec("dj_cqrs.master") is not None  # dj_cqrs, not django-cqrs


def drain() -> None:
    if OURS:
        from dj_cqrs.master.dispatcher import dispatcher

        dispatcher.drain(120)


def main() -> None:
    n = int(os.environ.get("BENCH_N", "2000"))
    bulk = int(os.environ.get("BENCH_BULK", "5000"))
    relay_events = int(os.environ.get("BENCH_RELAY", "0"))
    call_command("migrate", verbosity=0, run_syncdb=True)
    conn = pika.BlockingConnection(pika.ConnectionParameters(os.environ.get("BENCH_RABBIT_HOST", "127.0.0.1")))
    channel = conn.channel()
    channel.exchange_declare(EXCHANGE, "topic", durable=True)
    queue = f"{EXCHANGE}_sink"
    channel.queue_declare(queue, durable=True)
    channel.queue_bind(queue, EXCHANGE, "bench_item")
    channel.queue_bind(queue, EXCHANGE, "bench_trigger_item")
    result: dict[str, float] = {}
    try:
        kinds = [("plain", PlainItem), ("cqrs", CqrsItem), ("trigger", TriggerItem)]
        times: dict[str, list[float]] = {f"{k}_{op}": [] for k, _ in kinds for op in ("create", "update")}
        for i in range(n):
            for kind, model in kinds[i % 3 :] + kinds[: i % 3]:  # rotate the order
                start = time.perf_counter()
                model.objects.create(name=f"n{i}", value=i)
                times[f"{kind}_create"].append(time.perf_counter() - start)
        objects = {kind: list(model.objects.order_by("pk")[:n]) for kind, model in kinds}
        for i in range(n):
            for kind, _model in kinds[i % 3 :] + kinds[: i % 3]:
                obj = objects[kind][i]
                obj.value += 1
                start = time.perf_counter()
                obj.save()
                times[f"{kind}_update"].append(time.perf_counter() - start)
        drain()
        for key, values in times.items():
            result[key + "_us"] = statistics.median(values) * 1e6
        for kind in ("cqrs", "trigger"):
            for op in ("create", "update"):
                result[f"{kind}_{op}_ratio"] = result[f"{kind}_{op}_us"] / result[f"plain_{op}_us"]
        result["create_ratio"] = result["cqrs_create_ratio"]
        result["update_ratio"] = result["cqrs_update_ratio"]

        PlainItem.objects.all().delete()
        CqrsItem.objects.all().delete()
        drain()
        PlainItem.objects.bulk_create([PlainItem(name=f"b{i}") for i in range(bulk)])
        CqrsItem.objects.bulk_create([CqrsItem(name=f"b{i}") for i in range(bulk)])
        plain_s, cqrs_s = [], []
        for rnd in range(3):
            start = time.perf_counter()
            PlainItem.objects.all().update(value=rnd, cqrs_revision=F("cqrs_revision") + 1)
            plain_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            CqrsItem.cqrs.bulk_update(CqrsItem.objects.all(), value=rnd)
            cqrs_s.append(time.perf_counter() - start)
            drain()
        result["plain_bulk_update_s"] = statistics.median(plain_s)
        result["cqrs_bulk_update_s"] = statistics.median(cqrs_s)
        result["bulk_update_ratio"] = result["cqrs_bulk_update_s"] / result["plain_bulk_update_s"]

        if OURS and relay_events:
            result.update(relay_backlog(relay_events))
        channel.queue_purge(queue)
    finally:
        channel.queue_delete(queue)
        conn.close()
    print(json.dumps(result))


def relay_backlog(count: int) -> dict[str, float]:
    """Publish a backlog of ``count`` outbox events with the relay (publisher confirms on)."""
    from django.test import override_settings

    from dj_cqrs.master.relay import Relay
    from dj_cqrs.models import OutboxEvent

    CqrsItem.objects.all().delete()
    drain()
    cqrs = {**settings.CQRS, "master": {"outbox_publish": "relay"}}
    with override_settings(CQRS=cqrs):
        for start in range(0, count, 5000):
            CqrsItem.cqrs.bulk_create([CqrsItem(name=f"r{i}") for i in range(start, min(count, start + 5000))])
        pending = OutboxEvent.objects.filter(published_at__isnull=True).count()
        began = time.perf_counter()
        published = Relay(min_age=0, batch_size=1000).run_once()
        elapsed = time.perf_counter() - began
    return {"relay_events": float(pending), "relay_published": float(published), "relay_s": elapsed, "relay_events_per_s": published / elapsed}


if __name__ == "__main__":
    main()
