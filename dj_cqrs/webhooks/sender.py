"""One HTTP ``PUT`` of a webhook delivery (standard library ``http.client``; redirects are not
followed: a 3xx answer is a failed attempt)."""

from __future__ import annotations

import http.client
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from dj_cqrs.webhooks.signing import sign

USER_AGENT = "dj_cqrs-webhooks"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt got: the HTTP status (None without an answer) and, unless it was a 2xx,
    why it failed."""

    status: int | None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Sender(Protocol):
    """What sends one attempt (:func:`put`; tests pass their own)."""

    def __call__(
        self,
        url: str,
        body: bytes,
        secret: str,
        event_id: str,
        timeout: float,
        headers: Mapping[str, str] | None = None,
    ) -> Outcome: ...


def put(
    url: str,
    body: bytes,
    secret: str,
    event_id: str,
    timeout: float,
    headers: Mapping[str, str] | None = None,
) -> Outcome:
    """PUT ``body`` to ``url``, signed with ``secret``, with the extra ``headers`` (the trace
    context: ``traceparent``, ``tracestate``); never raises for network errors."""
    parts = urlsplit(url)
    connection_class = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    request_headers = {
        **(headers or {}),
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        **sign(body, secret, event_id),
    }
    try:
        connection = connection_class(parts.hostname or "", parts.port, timeout=timeout)
    except (ValueError, http.client.HTTPException) as exc:  # a malformed port or host
        return Outcome(None, f"bad URL: {exc}")
    try:
        connection.request("PUT", path, body=body, headers=request_headers)
        response = connection.getresponse()
        status = response.status
        detail = response.read(200).decode("utf-8", "replace").strip()
    except (OSError, http.client.HTTPException) as exc:  # refused, reset, timeout, TLS, bad answer
        kind = "timeout" if isinstance(exc, (socket.timeout, TimeoutError)) else type(exc).__name__
        return Outcome(None, f"{kind}: {exc}"[:500])
    finally:
        connection.close()
    if 200 <= status < 300:
        return Outcome(status)
    return Outcome(status, f"HTTP {status}: {detail}"[:500])
