"""Django settings for the unit tests: SQLite and the in-memory transport by default.

DATABASE_URL=postgres://postgres@127.0.0.1:5432/dj_cqrs_unit runs the same tests on PostgreSQL.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

SECRET_KEY = "dj-cqrs-tests"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.admin",
    "django.contrib.sessions",
    "django.contrib.messages",
    "dj_cqrs",
    "tests.apps.master_app",
    "tests.apps.replica_app",
    "tests.apps.quickstart",
    "tests.apps.eventsdoc",
]


def _database() -> dict[str, object]:
    url = os.environ.get("DATABASE_URL")
    if not url:
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}
    parts = urlparse(url)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parts.path.lstrip("/") or "dj_cqrs_unit",
        "USER": parts.username or "postgres",
        "PASSWORD": parts.password or "",
        "HOST": parts.hostname or "127.0.0.1",
        "PORT": parts.port or 5432,
    }


DATABASES = {"default": _database()}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    DATABASES["other"] = {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}
else:
    DATABASES["other"] = dict(DATABASES["default"], NAME=f"{DATABASES['default']['NAME']}_other")

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "tests.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

CQRS = {
    "transport": "dj_cqrs.transport.memory.MemoryTransport",
    "queue": "replica",
    "master": {
        "CQRS_AUTO_UPDATE_FIELDS": False,
        "CQRS_MESSAGE_TTL": 86400,
    },
    "replica": {
        "CQRS_MAX_RETRIES": 3,
        "CQRS_RETRY_DELAY": 0,
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"null": {"class": "logging.NullHandler"}},
    "root": {"handlers": ["null"], "level": "WARNING"},
}
