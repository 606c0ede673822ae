"""Settings shared by the integration-test services.

The same service code runs on dj_cqrs (this repository) and on django-cqrs 3.1.0 (in its own
virtualenv), so it only uses the API both packages share. Everything comes from the environment:

  IT_DB_NAME, IT_DB_ENGINE (postgresql|sqlite3), IT_CQRS_TRANSPORT, IT_CQRS_URL, IT_CQRS_EXCHANGE,
  IT_CQRS_QUEUE, IT_CQRS_MAX_RETRIES, IT_CQRS_RETRY_DELAY, IT_CQRS_MESSAGE_TTL, IT_LOG_LEVEL, IT_USE_TZ

dj_cqrs only (never set for a django-cqrs peer): IT_CQRS_URLS (a JSON list of broker URLs, the
nodes of a cluster: CQRS['url'] becomes that list), IT_REPLICA_OPTIONS (a JSON dict merged into
CQRS['replica'], e.g. {"queue_type": "quorum", "partitions": 8}), IT_MASTER_OPTIONS (a JSON dict merged
into CQRS['master'], e.g. {"CQRS_OUTBOX": false}).
"""

import json
import os

SECRET_KEY = "dj-cqrs-integration"
DEBUG = False
USE_TZ = os.environ.get("IT_USE_TZ", "1") == "1"  # IT_USE_TZ=0: naive datetimes, as some django-cqrs masters run
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
INSTALLED_APPS = ["django.contrib.contenttypes", "dj_cqrs", "catalog"]
try:  # CQRS_DB_TRIGGERS models: dj_cqrs (not django-cqrs) with django-pgtrigger
    import dj_cqrs.master.triggers  # noqa: F401
    import pgtrigger  # noqa: F401

    TRIGGERS = True
except ImportError:
    TRIGGERS = False

_engine = os.environ.get("IT_DB_ENGINE", "postgresql")
if _engine == "sqlite3":
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["IT_DB_NAME"]}}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("IT_DB_NAME", "dj_cqrs_it"),
            "USER": os.environ.get("IT_DB_USER", "postgres"),
            "PASSWORD": os.environ.get("IT_DB_PASSWORD", ""),
            "HOST": os.environ.get("IT_DB_HOST", "127.0.0.1"),
            "PORT": int(os.environ.get("IT_DB_PORT", "5432")),
        }
    }


def cqrs_settings(role):
    settings = {
        "transport": os.environ.get("IT_CQRS_TRANSPORT", "dj_cqrs.transport.RabbitMQTransport"),
        "url": os.environ.get("IT_CQRS_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"),
        "exchange": os.environ.get("IT_CQRS_EXCHANGE", "cqrs"),
    }
    if os.environ.get("IT_CQRS_URLS"):
        settings["url"] = json.loads(os.environ["IT_CQRS_URLS"])
    if role == "replica":
        settings["queue"] = os.environ.get("IT_CQRS_QUEUE", "replica")
        settings["replica"] = {
            "CQRS_MAX_RETRIES": int(os.environ.get("IT_CQRS_MAX_RETRIES", "3")),
            "CQRS_RETRY_DELAY": int(os.environ.get("IT_CQRS_RETRY_DELAY", "1")),
            **json.loads(os.environ.get("IT_REPLICA_OPTIONS") or "{}"),
        }
    else:
        # A callable, not a dotted path: django-cqrs 3.1.0 accepts only a callable here.
        from catalog.correlation import correlation_id
        from catalog.meta import cqrs_meta

        settings["master"] = {
            "CQRS_MESSAGE_TTL": int(os.environ.get("IT_CQRS_MESSAGE_TTL", "3600")),
            "correlation_function": correlation_id,
            "meta_function": cqrs_meta,
        }
        # dj_cqrs-only keys, set only by the tests that need them (django-cqrs peers never get them)
        if os.environ.get("IT_MASTER_CQRS_URL"):
            settings["url"] = os.environ["IT_MASTER_CQRS_URL"]
        if os.environ.get("IT_OUTBOX_PUBLISH"):
            settings["master"]["outbox_publish"] = os.environ["IT_OUTBOX_PUBLISH"]
        if os.environ.get("IT_OUTBOX_GRACE"):
            settings["master"]["outbox_grace"] = float(os.environ["IT_OUTBOX_GRACE"])
        if os.environ.get("IT_PUBLISH_RETRIES"):
            settings["master"]["publish_retries"] = int(os.environ["IT_PUBLISH_RETRIES"])
        settings["master"].update(json.loads(os.environ.get("IT_MASTER_OPTIONS") or "{}"))
    return settings


LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(process)d %(levelname)s %(name)s %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["stderr"], "level": os.environ.get("IT_LOG_LEVEL", "WARNING")},
    "loggers": {"pika": {"level": "WARNING"}},
}
