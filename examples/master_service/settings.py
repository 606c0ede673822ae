"""Settings of the demo's master service: it owns products and customers and publishes changes.

``examples/demo.py`` sets the ``DEMO_*`` environment variables. Without them (``manage.py`` run by
hand after ``make demo``) the service uses SQLite and kombu's server-less ``filesystem://`` broker
in ``examples/.demo/``.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent
WORK_DIR = Path(os.environ.get("DEMO_WORKDIR", BASE_DIR.parent / ".demo"))

SECRET_KEY = "dj-cqrs-demo-master (not a secret)"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
# ``make demo-web`` serves this service's JSON API (urls.py) on 127.0.0.1 for its console.
ROOT_URLCONF = "urls"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["django.contrib.contenttypes", "dj_cqrs", "inventory"]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends." + os.environ.get("DEMO_DB_ENGINE", "sqlite3"),
        "NAME": os.environ.get("DEMO_DB_NAME", str(WORK_DIR / "master.sqlite3")),
        "HOST": os.environ.get("DEMO_DB_HOST", ""),
        "PORT": os.environ.get("DEMO_DB_PORT", ""),
        "USER": os.environ.get("DEMO_DB_USER", ""),
        "PASSWORD": os.environ.get("DEMO_DB_PASSWORD", ""),
    }
}

CQRS = {
    "transport": os.environ.get("DEMO_CQRS_TRANSPORT", "dj_cqrs.transport.KombuTransport"),
    "url": os.environ.get("DEMO_CQRS_URL", "filesystem://"),
    "exchange": os.environ.get("DEMO_CQRS_EXCHANGE", "cqrs_demo"),
}
if CQRS["url"].startswith("filesystem://"):
    # kombu's filesystem broker: one message per file in a folder both services share, and the
    # exchange -> queue bindings in ``control``. Consumed messages are kept in ``processed``.
    BROKER_DIR = Path(os.environ.get("DEMO_BROKER_DIR", WORK_DIR / "broker"))
    CQRS["transport_options"] = {
        "data_folder_in": str(BROKER_DIR / "messages"),
        "data_folder_out": str(BROKER_DIR / "messages"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": True,
        "processed_folder": str(BROKER_DIR / "processed"),
        "polling_interval": 0.1,
    }

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(process)d %(levelname)s %(name)s %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["stderr"], "level": os.environ.get("DEMO_LOG_LEVEL", "WARNING")},
}
