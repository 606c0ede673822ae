"""Settings shared by the integration-test services.

The same service code runs on dj_cqrs (this repository) and on django-cqrs 3.1.0 (in its own
virtualenv), so it only uses the API both packages share. Everything comes from the environment:

  IT_DB_NAME, IT_DB_ENGINE (postgresql|sqlite3), IT_CQRS_TRANSPORT, IT_CQRS_URL, IT_CQRS_EXCHANGE,
  IT_CQRS_QUEUE, IT_CQRS_MAX_RETRIES, IT_CQRS_RETRY_DELAY
"""

import os

SECRET_KEY = "dj-cqrs-integration"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
INSTALLED_APPS = ["django.contrib.contenttypes", "dj_cqrs", "catalog"]

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
    if role == "replica":
        settings["queue"] = os.environ.get("IT_CQRS_QUEUE", "replica")
        settings["replica"] = {
            "CQRS_MAX_RETRIES": int(os.environ.get("IT_CQRS_MAX_RETRIES", "3")),
            "CQRS_RETRY_DELAY": int(os.environ.get("IT_CQRS_RETRY_DELAY", "1")),
        }
    else:
        # A callable, not a dotted path: django-cqrs 3.1.0 accepts only a callable here.
        from catalog.correlation import correlation_id

        settings["master"] = {
            "CQRS_MESSAGE_TTL": 3600,
            "correlation_function": correlation_id,
        }
    return settings


LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(process)d %(levelname)s %(name)s %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["stderr"], "level": os.environ.get("IT_LOG_LEVEL", "WARNING")},
}
