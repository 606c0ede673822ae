"""Settings of the ``events`` benchmark's Django project (dj_cqrs only), from the environment:

BENCH_DB (database, created by the caller), BENCH_EXCHANGE, BENCH_QUEUE (the consuming service's
queue; unset in the emitting process), BENCH_OUTBOX_PUBLISH (``relay``: nothing publishes at
commit), BENCH_EVENTS_HANDLER (see ``evapp.handlers``), BENCH_DB_HOST/PORT, BENCH_RABBIT_HOST/PORT.

Persistent database connections (``CONN_MAX_AGE = None``, what a long-lived service has), as in
the other groups. ``benchapp`` (bench/savebench) gives ``PlainItem``, the outbox group's plain row.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "savebench"))  # benchapp

SECRET_KEY = "dj-cqrs-bench-events"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
INSTALLED_APPS = ["django.contrib.contenttypes", "dj_cqrs", "benchapp", "evapp"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ["BENCH_DB"],
        "USER": "postgres",
        "HOST": os.environ.get("BENCH_DB_HOST", "127.0.0.1"),
        "PORT": int(os.environ.get("BENCH_DB_PORT", "5432")),
        "CONN_MAX_AGE": None,
    }
}
_RABBIT = f"{os.environ.get('BENCH_RABBIT_HOST', '127.0.0.1')}:{os.environ.get('BENCH_RABBIT_PORT', '5672')}"
CQRS = {
    "transport": "dj_cqrs.transport.RabbitMQTransport",
    "url": os.environ.get("BENCH_AMQP_URL", f"amqp://guest:guest@{_RABBIT}/%2F"),
    "exchange": os.environ.get("BENCH_EXCHANGE", "bench_events"),
    "master": {},
}
if os.environ.get("BENCH_QUEUE"):
    CQRS["queue"] = os.environ["BENCH_QUEUE"]
if os.environ.get("BENCH_OUTBOX_PUBLISH"):
    CQRS["master"]["outbox_publish"] = os.environ["BENCH_OUTBOX_PUBLISH"]
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(process)d %(levelname)s %(name)s %(message)s"}
    },
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["stderr"], "level": os.environ.get("BENCH_LOG_LEVEL", "WARNING")},
    "loggers": {"pika": {"level": "WARNING"}},
}
