"""``TransportPayload``: one CQRS event, as produced by a master and consumed by a replica.

The JSON body (``to_dict``/``from_message``) is the django-cqrs 3.x wire format; see
``docs/wire-format.md``.
"""

from __future__ import annotations

import datetime
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from dj_cqrs.conf import cqrs_settings
from dj_cqrs.constants import REQUIRED_BODY_KEYS, SignalType
from dj_cqrs.core.reasons import Reason
from dj_cqrs.exceptions import PayloadError

_SIGNALS = {s.value: s for s in SignalType}
_REQUIRED_KEYS = frozenset(REQUIRED_BODY_KEYS)


def format_expires(value: datetime.datetime | None) -> str | None:
    """ISO-8601 with second precision and offset, e.g. ``2026-11-22T08:27:56+00:00``."""
    if value is None:
        return None
    return value.replace(microsecond=0).isoformat()


def aware_datetime(value: Any) -> datetime.datetime | None:
    """A wire timestamp (``expires``, ``cqrs_updated``) as an aware datetime; None when it is
    missing or unparsable. Naive values are taken as UTC: django-cqrs masters with
    ``USE_TZ=False`` send naive values, in UTC there too."""
    if isinstance(value, datetime.datetime):
        parsed: datetime.datetime | None = value
    elif isinstance(value, str):
        try:
            parsed = parse_datetime(value)
        except ValueError:
            parsed = None
    else:
        parsed = None
    if parsed is not None and timezone.is_naive(parsed):
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    return parsed


def parse_expires(value: Any) -> datetime.datetime | None:
    if value is None:
        return None
    parsed = aware_datetime(value)
    if parsed is None:
        raise PayloadError(f"'expires' is not an ISO-8601 datetime: {value!r}", reason=Reason.BAD_EXPIRES)
    return parsed


def message_expiration(ttl: int | None = None, *, use_default: bool = True) -> datetime.datetime | None:
    """``now + ttl`` seconds, or None (never). ``ttl`` defaults to ``master.CQRS_MESSAGE_TTL``."""
    if ttl is None and use_default:
        ttl = cqrs_settings.master.CQRS_MESSAGE_TTL
    if ttl is None:
        return None
    return timezone.now() + datetime.timedelta(seconds=ttl)


class TransportPayload:
    """A CQRS event.

    Everything but ``retries`` is read-only after construction. ``queue`` is the target replica
    queue of a direct sync (producer side) or the queue the routing key addressed (consumer side);
    it never goes into the body, because the routing key already carries it.
    """

    __slots__ = (
        "_signal_type",
        "_cqrs_id",
        "_instance_data",
        "_instance_pk",
        "_queue",
        "_previous_data",
        "_correlation_id",
        "_expires",
        "_retries",
        "_meta",
        "trace",
    )

    def __init__(
        self,
        signal_type: SignalType | str,
        cqrs_id: str,
        instance_data: dict[str, Any],
        instance_pk: Any,
        queue: str | None = None,
        previous_data: dict[str, Any] | None = None,
        correlation_id: str | None = None,
        expires: datetime.datetime | None = None,
        retries: int = 0,
        meta: dict[str, Any] | None = None,
    ) -> None:
        # a member as is (calling the enum costs more than the rest of the constructor)
        self._signal_type = signal_type if type(signal_type) is SignalType else SignalType(signal_type)
        self._cqrs_id = cqrs_id
        self._instance_data = instance_data
        self._instance_pk = instance_pk
        self._queue = queue
        self._previous_data = previous_data
        self._correlation_id = correlation_id
        self._expires = expires
        self._retries = retries
        self._meta = meta
        #: W3C trace context (``traceparent``/``tracestate``) sent as message headers, never in
        #: the body (:mod:`dj_cqrs.tracing`); None without an active span.
        self.trace: dict[str, str] | None = None

    @classmethod
    def from_message(cls, dct: Any, *, queue: str | None = None) -> TransportPayload:
        """Build a payload from a decoded JSON body; raise :class:`PayloadError` when malformed."""
        if not isinstance(dct, dict):
            raise PayloadError(
                f"body must be a JSON object, got {type(dct).__name__}", reason=Reason.NOT_AN_OBJECT
            )
        if not _REQUIRED_KEYS <= dct.keys():
            missing = [k for k in REQUIRED_BODY_KEYS if k not in dct]
            raise PayloadError(f"missing required keys: {', '.join(missing)}", reason=Reason.MISSING_KEYS)
        signal = dct["signal_type"]
        member = _SIGNALS.get(signal) if isinstance(signal, str) else None
        if member is None:
            raise PayloadError(f"unknown signal_type {signal!r}", reason=Reason.BAD_SIGNAL_TYPE)
        cqrs_id = dct["cqrs_id"]
        if not isinstance(cqrs_id, str) or not cqrs_id:
            raise PayloadError(f"cqrs_id must be a non-empty string, got {cqrs_id!r}", reason=Reason.BAD_CQRS_ID)
        instance_data = dct["instance_data"]
        if not isinstance(instance_data, dict):
            raise PayloadError("instance_data must be a JSON object", reason=Reason.BAD_INSTANCE_DATA)
        pk = dct["instance_pk"]
        if isinstance(pk, (dict, list)):
            raise PayloadError("instance_pk must be a scalar", reason=Reason.BAD_INSTANCE_PK)
        previous = dct.get("previous_data")
        if previous is not None and not isinstance(previous, dict):
            raise PayloadError("previous_data must be an object or null", reason=Reason.BAD_PREVIOUS_DATA)
        meta = dct.get("meta")
        if meta is not None and not isinstance(meta, dict):
            raise PayloadError("meta must be an object or null", reason=Reason.BAD_META)
        retries = dct.get("retries") or 0
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise PayloadError(f"retries must be an int >= 0, got {retries!r}", reason=Reason.BAD_RETRIES)
        correlation_id = dct.get("correlation_id")
        if correlation_id is not None and not isinstance(correlation_id, (str, int)):
            raise PayloadError("correlation_id must be a string or null", reason=Reason.BAD_CORRELATION_ID)
        if "expires" in dct:
            expires = parse_expires(dct["expires"])
        else:
            # Legacy masters (django-cqrs < 2.0) send no expiry: use this service's TTL.
            expires = message_expiration()
        return cls(
            signal_type=member,
            cqrs_id=cqrs_id,
            instance_data=instance_data,
            instance_pk=pk,
            queue=queue,
            previous_data=previous,
            correlation_id=None if correlation_id is None else str(correlation_id),
            expires=expires,
            retries=retries,
            meta=meta,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON body, keys in django-cqrs's order."""
        return {
            "signal_type": self._signal_type.value,
            "cqrs_id": self._cqrs_id,
            "instance_data": self._instance_data,
            "previous_data": self._previous_data,
            "instance_pk": self._instance_pk,
            "correlation_id": self._correlation_id,
            "retries": self._retries,
            "expires": format_expires(self._expires),
            "meta": self._meta,
        }

    def is_expired(self) -> bool:
        if self._expires is None:
            return False
        expires = self._expires
        if timezone.is_naive(expires):
            expires = expires.replace(tzinfo=datetime.timezone.utc)
        # An aware "now" whatever USE_TZ is: received expiries are always aware (see parse_expires).
        return expires <= datetime.datetime.now(datetime.timezone.utc)

    def with_changes(self, **changes: Any) -> TransportPayload:
        """A copy with some attributes replaced (payloads are otherwise immutable)."""
        values = {
            "signal_type": self._signal_type,
            "cqrs_id": self._cqrs_id,
            "instance_data": self._instance_data,
            "instance_pk": self._instance_pk,
            "queue": self._queue,
            "previous_data": self._previous_data,
            "correlation_id": self._correlation_id,
            "expires": self._expires,
            "retries": self._retries,
            "meta": self._meta,
        }
        values.update(changes)
        copy = TransportPayload(**values)
        copy.trace = self.trace
        return copy

    @property
    def signal_type(self) -> SignalType:
        return self._signal_type

    @property
    def cqrs_id(self) -> str:
        return self._cqrs_id

    @property
    def instance_data(self) -> dict[str, Any]:
        return self._instance_data

    @property
    def pk(self) -> Any:
        return self._instance_pk

    @property
    def instance_pk(self) -> Any:
        return self._instance_pk

    @property
    def queue(self) -> str | None:
        return self._queue

    @property
    def previous_data(self) -> dict[str, Any] | None:
        return self._previous_data

    @property
    def correlation_id(self) -> str | None:
        return self._correlation_id

    @property
    def meta(self) -> dict[str, Any] | None:
        return self._meta

    @property
    def expires(self) -> datetime.datetime | None:
        return self._expires

    @property
    def retries(self) -> int:
        return self._retries

    @retries.setter
    def retries(self, value: int) -> None:
        self._retries = value

    @property
    def revision(self) -> int | None:
        rev = self._instance_data.get("cqrs_revision")
        return rev if isinstance(rev, int) and not isinstance(rev, bool) else None

    @property
    def is_sync(self) -> bool:
        return self._signal_type is SignalType.SYNC

    def __repr__(self) -> str:
        return (
            f"TransportPayload({self._signal_type.value} {self._cqrs_id} pk={self._instance_pk!r}"
            f" rev={self.revision} queue={self._queue!r} retries={self._retries})"
        )
