"""Names and default values shared across the package (django-cqrs compatible names)."""

from __future__ import annotations

import enum
from typing import Final


class SignalType(str, enum.Enum):
    """Type of a CQRS event. Values are the strings on the wire."""

    SAVE = "SAVE"
    DELETE = "DELETE"
    SYNC = "SYNC"

    def __str__(self) -> str:
        return self.value


ALL_BASIC_FIELDS: Final = "__all__"
FIELDS_TRACKER_FIELD_NAME: Final = "__fields_tracker"
TRACKED_FIELDS_ATTR_NAME: Final = "__tracked_fields"

# The queue name written by ``cqrs_diff_replica`` when there is no direct target.
NO_QUEUE: Final = "None"

DEFAULT_DEAD_MESSAGE_TTL: Final = 864000  # 10 days
DEFAULT_MASTER_AUTO_UPDATE_FIELDS: Final = False
DEFAULT_MASTER_MESSAGE_TTL: Final = 86400  # 1 day
DEFAULT_REPLICA_MAX_RETRIES: Final = 30
DEFAULT_REPLICA_RETRY_DELAY: Final = 2  # seconds
DEFAULT_REPLICA_DELAY_QUEUE_MAX_SIZE: Final = 1000

#: The table of the master's transactional outbox (``dj_cqrs.models.OutboxEvent``); named here because
#: the ``CQRS_DB_TRIGGERS`` triggers are built while the models are being defined.
OUTBOX_TABLE: Final = "dj_cqrs_outbox"

DB_VENDOR_PG: Final = "postgresql"
DB_VENDOR_MYSQL: Final = "mysql"
SUPPORTED_TIMEOUT_DB_VENDORS: Final = frozenset({DB_VENDOR_MYSQL, DB_VENDOR_PG})

PG_TIMEOUT_FLAG: Final = "statement timeout"
MYSQL_TIMEOUT_ERROR_CODE: Final = 3024

# Keys of the JSON body (wire format, see docs/wire-format.md).
REQUIRED_BODY_KEYS: Final = ("signal_type", "cqrs_id", "instance_data", "instance_pk")

# Logger name used by django-cqrs; our modules log below it too (``django-cqrs`` is kept for
# operators' existing log routing).
LOGGER_NAME: Final = "django-cqrs"
