"""One small Django project that runs with either package (ours or django-cqrs 3.1.0).

It holds master models (``dmaster``) and replica models (``dreplica``) side by side, on SQLite by
default (``DIFF_DB_URL=postgres://...`` for PostgreSQL), with django-cqrs's ``TransportMock`` as the
transport: scenarios patch ``dj_cqrs.controller.producer.produce`` or call the consumer directly,
the way a team's own test suite does.
"""

import os

SECRET_KEY = "differential"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.admin",
    "dj_cqrs",
    "dmaster",
    "dreplica",
]

MIDDLEWARE: list[str] = []


def _database() -> dict[str, object]:
    url = os.environ.get("DIFF_DB_URL", "")
    if url.startswith("postgres"):
        rest = url.split("://", 1)[1]
        creds, _, hostpart = rest.rpartition("@")
        hostport, _, name = hostpart.partition("/")
        host, _, port = hostport.partition(":")
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name or "postgres",
            "USER": creds.split(":")[0] or "postgres",
            "HOST": host or "127.0.0.1",
            "PORT": port or "5432",
        }
    return {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ.get("DIFF_DB_PATH", ":memory:")}


DATABASES = {"default": _database()}

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.contrib.messages.context_processors.messages"]},
    }
]

CQRS = {
    "transport": "dj_cqrs.transport.mock.TransportMock",
    "queue": "differential_replica",
    "master": {"CQRS_AUTO_UPDATE_FIELDS": False, "CQRS_MESSAGE_TTL": 86400},
    "replica": {"CQRS_MAX_RETRIES": 3, "CQRS_RETRY_DELAY": 2},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"null": {"class": "logging.NullHandler"}},
    "root": {"handlers": ["null"], "level": "CRITICAL"},
}
