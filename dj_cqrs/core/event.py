"""``EventPayload``: a domain event as it travels (``dj_cqrs.events.emit`` to a handler).

The body is a JSON object whose first key is the format marker ``"dj_cqrs_event": 1``; see
``docs/wire-format.md``. It is published on the CQRS exchange with the routing key
``dj_cqrs.event.<name>`` (:func:`dj_cqrs.core.names.event_routing_key`). The payload offers what
transports, the settlement and the log lines read of a model payload (``cqrs_id``, ``queue``,
``retries``, ``to_dict``, ``with_changes``), so every transport carries it unchanged; its
``cqrs_id`` is its routing key.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import re
from typing import Any

from django.utils import timezone

from dj_cqrs.core.names import event_routing_key
from dj_cqrs.core.payload import TransportPayload, aware_datetime, format_expires, parse_expires
from dj_cqrs.core.reasons import Reason
from dj_cqrs.exceptions import PayloadError

#: The format marker and its version: the first key of every domain event body.
MARKER = "dj_cqrs_event"
FORMAT_VERSION = 1
#: How a domain event body starts (the encoder writes keys in order, without spaces).
BODY_PREFIX = b'{"' + MARKER.encode() + b'"'
#: ``signal_type`` of a domain event's outbox row (model events use SAVE, DELETE, SYNC).
OUTBOX_SIGNAL = "EVENT"

NAME_MAX_LENGTH = 200
KEY_MAX_LENGTH = 255
_NAME = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\Z")
_PATTERN_WORD = re.compile(r"[A-Za-z0-9_-]+|\*|#\Z")


def check_name(name: Any) -> str:
    """``name`` if it is a valid event name (dotted words), else ``ValueError``/``TypeError``."""
    if not isinstance(name, str):
        raise TypeError(f"event name must be a str, got {type(name).__name__}")
    if not name or len(name) > NAME_MAX_LENGTH or not _NAME.match(name):
        raise ValueError(
            f"invalid event name {name!r}: dotted words of letters, digits, '_' and '-' (e.g. 'order.paid'),"
            f" at most {NAME_MAX_LENGTH} characters"
        )
    return name


def check_pattern(pattern: Any) -> str:
    """``pattern`` if it is a valid AMQP topic pattern over event names (``order.*``, ``#.paid``)."""
    if not isinstance(pattern, str):
        raise TypeError(f"event pattern must be a str, got {type(pattern).__name__}")
    words = pattern.split(".")
    if (
        not pattern
        or len(pattern) > NAME_MAX_LENGTH
        or not all(_PATTERN_WORD.fullmatch(w) for w in words)
    ):
        raise ValueError(
            f"invalid event pattern {pattern!r}: dotted words, '*' (one word) or '#' (zero or more words),"
            " e.g. 'order.*' or 'order.#'"
        )
    return pattern


def key_text(key: Any) -> str:
    """An aggregate key as text (str, int or UUID); ``TypeError``/``ValueError`` otherwise."""
    if isinstance(key, bool) or not isinstance(key, (str, int)) and type(key).__name__ != "UUID":
        raise TypeError(f"event key must be a str, int or UUID, got {type(key).__name__}")
    text = str(key)
    if not text or len(text) > KEY_MAX_LENGTH:
        raise ValueError(f"event key must be 1 to {KEY_MAX_LENGTH} characters, got {len(text)}")
    return text


@functools.lru_cache(maxsize=4096)
def topic_matches(pattern: str, name: str) -> bool:
    """Whether the AMQP topic ``pattern`` selects the event ``name`` (``*``: one word, ``#``: zero
    or more words), as RabbitMQ's topic exchange decides."""
    words, parts = pattern.split("."), name.split(".")

    @functools.cache
    def match(i: int, j: int) -> bool:
        if i == len(words):
            return j == len(parts)
        word = words[i]
        if word == "#":
            return any(match(i + 1, k) for k in range(j, len(parts) + 1))
        if j == len(parts):
            return False
        return (word == "*" or word == parts[j]) and match(i + 1, j + 1)

    return match(0, 0)


@dataclasses.dataclass(frozen=True)
class EventPayload:
    """One domain event (see the module docstring). ``key`` is text; ``seq`` is the event's place
    in the sequence of its key (commit order on the emitting database)."""

    id: str
    name: str
    key: str
    seq: int
    version: int
    data: dict[str, Any]
    meta: dict[str, Any] | None
    occurred_at: datetime.datetime
    correlation_id: str | None = None
    retries: int = 0
    expires: datetime.datetime | None = None
    #: W3C trace context sent as message headers, never in the body (:mod:`dj_cqrs.tracing`).
    trace: dict[str, str] | None = dataclasses.field(default=None, compare=False)

    @property
    def cqrs_id(self) -> str:
        """The routing key (``dj_cqrs.event.<name>``): what transports address a message by."""
        return event_routing_key(self.name)

    @property
    def queue(self) -> None:
        return None

    @property
    def pk(self) -> str:
        return self.key

    @property
    def revision(self) -> int:
        return self.seq

    def to_dict(self) -> dict[str, Any]:
        return {
            MARKER: FORMAT_VERSION,
            "id": self.id,
            "name": self.name,
            "key": self.key,
            "seq": self.seq,
            "version": self.version,
            "data": self.data,
            "meta": self.meta,
            "occurred_at": self.occurred_at.isoformat(),
            "correlation_id": self.correlation_id,
            "retries": self.retries,
            "expires": format_expires(self.expires),
        }

    def with_changes(self, **changes: Any) -> EventPayload:
        return dataclasses.replace(self, **changes)

    def is_expired(self) -> bool:
        return self.expires is not None and self.expires <= timezone.now()

    @classmethod
    def from_message(cls, data: Any) -> EventPayload:
        """The event of a decoded body; :class:`PayloadError` (reason ``bad_event``) when invalid."""
        if not isinstance(data, dict):
            raise PayloadError("body must be a JSON object", reason=Reason.NOT_AN_OBJECT)
        if data.get(MARKER) != FORMAT_VERSION:
            raise PayloadError(
                f"not a domain event of format {FORMAT_VERSION}: {MARKER}={data.get(MARKER)!r}",
                reason=Reason.BAD_EVENT,
            )

        def field(key: str, kinds: tuple[type, ...], optional: bool = False) -> Any:
            value = data.get(key)
            if value is None and optional:
                return None
            if not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds:
                raise PayloadError(
                    f"domain event field {key!r} is missing or invalid: {value!r}"[:300],
                    reason=Reason.BAD_EVENT,
                )
            return value

        name = field("name", (str,))
        try:
            check_name(name)
        except ValueError as exc:
            raise PayloadError(str(exc), reason=Reason.BAD_EVENT) from exc
        occurred = aware_datetime(field("occurred_at", (str,)))
        if occurred is None:
            raise PayloadError(
                "domain event field 'occurred_at' is not an ISO-8601 datetime",
                reason=Reason.BAD_EVENT,
            )
        retries = field("retries", (int,), optional=True) or 0
        if retries < 0:
            raise PayloadError(f"retries must be >= 0, got {retries}", reason=Reason.BAD_RETRIES)
        correlation = data.get("correlation_id")
        if correlation is not None and not isinstance(correlation, (str, int)):
            raise PayloadError(
                "correlation_id must be a string or null", reason=Reason.BAD_CORRELATION_ID
            )
        try:
            expires = parse_expires(data.get("expires"))
        except PayloadError:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. an out-of-range date
            raise PayloadError(f"invalid expires: {exc}", reason=Reason.BAD_EXPIRES) from exc
        return cls(
            id=field("id", (str,)),
            name=name,
            key=field("key", (str,)),
            seq=field("seq", (int,)),
            version=field("version", (int,)),
            data=field("data", (dict,)),
            meta=field("meta", (dict,), optional=True),
            occurred_at=occurred,
            correlation_id=None if correlation is None else str(correlation),
            retries=retries,
            expires=expires,
        )


#: What a transport publishes: a model event or a domain event.
AnyPayload = TransportPayload | EventPayload


def is_event_body(data: Any) -> bool:
    """Whether a decoded body is a domain event (it carries the format marker)."""
    return isinstance(data, dict) and MARKER in data


__all__ = [
    "AnyPayload",
    "BODY_PREFIX",
    "FORMAT_VERSION",
    "MARKER",
    "OUTBOX_SIGNAL",
    "EventPayload",
    "check_name",
    "check_pattern",
    "is_event_body",
    "key_text",
    "topic_matches",
]
