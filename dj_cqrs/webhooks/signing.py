"""Webhook signatures: standard library only, so that any Python receiver can verify them.

A delivery carries three headers::

    X-CQRS-Event-Id:  <id of the change; the same on every redelivery>
    X-CQRS-Timestamp: <unix seconds when this attempt was signed>
    X-CQRS-Signature: sha256=<hex HMAC-SHA256(key=secret, msg=timestamp + "." + body)>

``body`` is the exact bytes of the request body, the secret its UTF-8 bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping
from typing import Any

EVENT_ID_HEADER = "X-CQRS-Event-Id"
TIMESTAMP_HEADER = "X-CQRS-Timestamp"
SIGNATURE_HEADER = "X-CQRS-Signature"
SCHEME = "sha256"


class SignatureError(ValueError):
    """A webhook request that does not verify; ``reason`` says why (the message too)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _bytes(value: str | bytes | bytearray | memoryview) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def signature(secret: str | bytes, timestamp: int | str, body: str | bytes) -> str:
    """``sha256=<hex>``: the HMAC-SHA256 of ``"<timestamp>.<body>"`` keyed with ``secret``."""
    message = str(timestamp).encode("ascii") + b"." + _bytes(body)
    return f"{SCHEME}=" + hmac.new(_bytes(secret), message, hashlib.sha256).hexdigest()


def sign(
    body: str | bytes, secret: str | bytes, event_id: str = "", timestamp: int | None = None
) -> dict[str, str]:
    """The headers of a delivery of ``body`` (timestamp: now unless given)."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    headers = {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: signature(secret, ts, body)}
    if event_id:
        headers[EVENT_ID_HEADER] = event_id
    return headers


def _header(headers: Mapping[str, Any] | Any, name: str) -> str | None:
    """A header case-insensitively from a dict, a Django ``request.headers``/``META`` or a
    Werkzeug/``http.server`` message."""
    getter = getattr(headers, "get", None)
    if getter is not None:
        for candidate in (name, name.lower(), "HTTP_" + name.upper().replace("-", "_")):
            value = getter(candidate)
            if value is not None:
                return str(value)
    items: Any = headers.items() if hasattr(headers, "items") else headers
    wanted = name.lower()
    for key, value in items:
        if str(key).lower() == wanted:
            return str(value)
    return None


def verify(
    body: str | bytes,
    headers: Mapping[str, Any] | Any,
    secret: str | bytes | Iterable[str | bytes],
    max_age: float | None = 300,
    now: float | None = None,
) -> bool:
    """Return True when ``body`` and ``headers`` are a genuine delivery signed with ``secret``
    (or any secret of a list: rotate by accepting the old and the new one for a while).

    Raise :class:`SignatureError` (a ``ValueError``) otherwise: a header missing or malformed, a
    timestamp more than ``max_age`` seconds old or ahead (None: no age check), or no secret
    matching. Comparisons are constant-time. Pass the raw body bytes, not re-encoded JSON.
    """
    given = _header(headers, SIGNATURE_HEADER)
    stamp = _header(headers, TIMESTAMP_HEADER)
    if not given:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    if not stamp:
        raise SignatureError(f"missing {TIMESTAMP_HEADER} header")
    try:
        ts = int(stamp.strip())
    except ValueError:
        raise SignatureError(f"malformed {TIMESTAMP_HEADER} header: {stamp[:40]!r}") from None
    if max_age is not None:
        skew = (time.time() if now is None else now) - ts
        if skew > max_age:
            raise SignatureError(f"stale timestamp: signed {skew:.0f}s ago (max_age {max_age}s)")
        if -skew > max_age:
            raise SignatureError(f"timestamp {-skew:.0f}s in the future (max_age {max_age}s)")
    given = given.strip()
    if not given.startswith(f"{SCHEME}="):
        raise SignatureError(
            f"unsupported signature scheme in {SIGNATURE_HEADER}: expected '{SCHEME}=<hex>'"
        )
    secrets = [secret] if isinstance(secret, (str, bytes)) else list(secret)
    if not secrets:
        raise SignatureError("no secret given")
    matched = False
    for candidate in secrets:  # every secret is tried: the time taken does not tell which matched
        expected = signature(candidate, ts, body)
        matched |= hmac.compare_digest(expected.encode("ascii"), given.encode("ascii", "replace"))
    if not matched:
        raise SignatureError("signature mismatch (wrong secret, or the body was altered)")
    return True
