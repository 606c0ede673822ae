"""Settings shared by the two domain-event services (``events_emitter``, ``events_handler``).

Both run on dj_cqrs only. Besides common_settings' environment: IT_TRANSPORT_OPTIONS (JSON, kombu),
IT_CQRS_RETRY_BACKOFF, IT_REPLICA_OPTIONS (JSON merged into CQRS['replica']), IT_OUTBOX_GRACE, IT_OUTBOX_PUBLISH. The "journal" alias is a second
connection to the same database in autocommit mode, so that what a test records survives a
rolled-back transaction (an emitter's rolled-back events, a failing handler's attempts).
"""

import json
import os

from common_settings import DATABASES


def events_cqrs():
    settings = {
        "transport": os.environ.get("IT_CQRS_TRANSPORT", "dj_cqrs.transport.RabbitMQTransport"),
        "url": os.environ.get("IT_CQRS_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"),
        "exchange": os.environ.get("IT_CQRS_EXCHANGE", "cqrs"),
        "transport_options": json.loads(os.environ.get("IT_TRANSPORT_OPTIONS", "null")),
        "master": {"CQRS_MESSAGE_TTL": int(os.environ.get("IT_CQRS_MESSAGE_TTL", "3600"))},
    }
    if os.environ.get("IT_CQRS_QUEUE"):
        settings["queue"] = os.environ["IT_CQRS_QUEUE"]
        settings["replica"] = {
            "CQRS_MAX_RETRIES": int(os.environ.get("IT_CQRS_MAX_RETRIES", "3")),
            "CQRS_RETRY_DELAY": float(os.environ.get("IT_CQRS_RETRY_DELAY", "1")),
            "CQRS_RETRY_BACKOFF": float(os.environ.get("IT_CQRS_RETRY_BACKOFF", "1")),
            **json.loads(os.environ.get("IT_REPLICA_OPTIONS") or "{}"),
        }
    if os.environ.get("IT_OUTBOX_GRACE"):
        settings["master"]["outbox_grace"] = float(os.environ["IT_OUTBOX_GRACE"])
    if os.environ.get("IT_OUTBOX_PUBLISH"):
        settings["master"]["outbox_publish"] = os.environ["IT_OUTBOX_PUBLISH"]
    return settings


DATABASES["journal"] = dict(DATABASES["default"])
