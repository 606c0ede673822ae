"""A replica-only service for the failure-handling tests (dj_cqrs only).

Environment (besides common_settings'): IT_CQRS_RETRY_BACKOFF, IT_CQRS_RETRY_MAX_DELAY,
IT_MAX_MESSAGE_BYTES, IT_BATCH_SIZE, IT_TRANSPORT_OPTIONS (JSON, kombu). The "journal" alias is a second connection to the same
database, used in autocommit mode, so that what the models record survives a rolled-back apply.
"""

import json
import os

from common_settings import *  # noqa: F401,F403
from common_settings import DATABASES

INSTALLED_APPS = ["django.contrib.contenttypes", "dj_cqrs", "faults"]
DATABASES["journal"] = dict(DATABASES["default"])

CQRS = {
    "transport": os.environ.get("IT_CQRS_TRANSPORT", "dj_cqrs.transport.RabbitMQTransport"),
    "url": os.environ.get("IT_CQRS_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"),
    "exchange": os.environ.get("IT_CQRS_EXCHANGE", "cqrs"),
    "queue": os.environ.get("IT_CQRS_QUEUE", "faults"),
    "transport_options": json.loads(os.environ.get("IT_TRANSPORT_OPTIONS", "null")),
    "master": {"CQRS_MESSAGE_TTL": 3600},
    "replica": {
        "CQRS_MAX_RETRIES": int(os.environ.get("IT_CQRS_MAX_RETRIES", "3")),
        "CQRS_RETRY_DELAY": float(os.environ.get("IT_CQRS_RETRY_DELAY", "1")),
        "CQRS_RETRY_BACKOFF": float(os.environ.get("IT_CQRS_RETRY_BACKOFF", "1")),
        "CQRS_RETRY_MAX_DELAY": float(os.environ.get("IT_CQRS_RETRY_MAX_DELAY", "3600")),
        "max_message_bytes": int(os.environ.get("IT_MAX_MESSAGE_BYTES", str(16 * 1024 * 1024))),
        "CQRS_BATCH_SIZE": int(os.environ.get("IT_BATCH_SIZE", "100")),
    },
}

# IT_REPLICA_OPTIONS (JSON): more CQRS['replica'] keys, e.g. {"partitions": 8, "queue_type": "quorum"}
# (integration_tests/test_partitions.py).
CQRS["replica"].update(json.loads(os.environ.get("IT_REPLICA_OPTIONS", "{}")))
