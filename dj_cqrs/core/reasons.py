"""Why a message was not applied (:class:`Reason`) and what an applied one did (:class:`Status`).

Both are ``str`` enums whose values are the words written in the ``x-cqrs-reason`` /
``x-cqrs-failure`` headers and in the log lines (``cqrs_reason``, ``cqrs_status``): a member is
equal to, hashes like and prints as its value, so headers, logs and comparisons with plain strings
are unchanged.
"""

from __future__ import annotations

import enum


class Reason(str, enum.Enum):
    """Why a message is retried, dead-lettered or kept (``Outcome.reason``)."""

    # The body cannot be decoded into a payload (dead-lettered at once).
    INVALID_BODY = "invalid_body"
    TOO_LARGE = "too_large"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_KEYS = "missing_keys"
    BAD_SIGNAL_TYPE = "bad_signal_type"
    BAD_CQRS_ID = "bad_cqrs_id"
    BAD_INSTANCE_DATA = "bad_instance_data"
    BAD_INSTANCE_PK = "bad_instance_pk"
    BAD_PREVIOUS_DATA = "bad_previous_data"
    BAD_META = "bad_meta"
    BAD_RETRIES = "bad_retries"
    BAD_CORRELATION_ID = "bad_correlation_id"
    BAD_EXPIRES = "bad_expires"
    #: A domain event body (``"dj_cqrs_event"``) with a missing or invalid field.
    BAD_EVENT = "bad_event"
    #: A payload error without a more precise reason (also a dead letter that cannot be read).
    MALFORMED = "malformed"
    # A payload this replica does not apply (dead-lettered at once).
    UNKNOWN_CQRS_ID = "unknown_cqrs_id"
    EXPIRED = "expired"
    # Data that no retry can fix (dead-lettered at once).
    MISSING_CQRS_FIELDS = "missing_cqrs_fields"
    MISSING_PK = "missing_pk"
    BAD_PK = "bad_pk"
    MISSING_REQUIRED_FIELDS = "missing_required_fields"
    BAD_MAPPING = "bad_mapping"
    #: A row that failed mapping without saying why (a custom ``_map_save_data``).
    INVALID = "invalid"
    # The handler failed: retried while the model's hooks say so.
    EXCEPTION = "exception"
    HANDLER_RETURNED_FALSY = "handler_returned_falsy"
    #: An event handler raised ``dj_cqrs.events.Permanent``: dead-lettered without retries.
    PERMANENT = "permanent"
    #: An ``ordered`` event handler holds a newer event while an older one of its key is retried.
    WAITING_FOR_OLDER = "waiting_for_older"
    # Final or transient outcomes.
    MAX_RETRIES = "max_retries"
    DATABASE_UNAVAILABLE = "database_unavailable"
    INTERNAL_ERROR = "internal_error"

    __hash__ = str.__hash__

    def __str__(self) -> str:
        return str.__str__(self)


class Status(str, enum.Enum):
    """What an acknowledged message did (``Outcome.status``)."""

    APPLIED = "applied"
    IGNORED_STALE = "ignored_stale"
    IGNORED_DUPLICATE = "ignored_duplicate"
    IGNORED_BROADCAST_SYNC = "ignored_broadcast_sync"
    IGNORED_DELETED = "ignored_deleted"
    IGNORED_STALE_DELETE = "ignored_stale_delete"
    #: A domain event no handler of this service matches (a binding left by a removed handler).
    NO_HANDLER = "no_handler"

    __hash__ = str.__hash__

    def __str__(self) -> str:
        return str.__str__(self)


__all__ = ["Reason", "Status"]
