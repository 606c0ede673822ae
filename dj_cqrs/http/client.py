"""The replica's HTTP client of a master's pull endpoint (stdlib ``urllib``, no dependency).

Connection errors, timeouts and 5xx answers are retried with exponential back-off (``retries``
times); then :class:`MasterUnavailable` is raised, so a dead master never makes ``cqrs_pull``
spin. Any other error status raises :class:`PullRefused` with the master's reason at once.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from dj_cqrs import encoding
from dj_cqrs.process.lifecycle import Backoff, StopFlag

logger = logging.getLogger("django-cqrs.http")


class PullClientError(Exception):
    """Base of the errors of a pull request."""


class PullRefused(PullClientError):
    """The master answered 4xx (bad token, cursor, cqrs_id or limit; a cursor too old: 410)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


class MasterUnavailable(PullClientError):
    """The master could not be reached or kept failing (5xx) through every retry."""


class Stopped(PullClientError):
    """The process was asked to stop while waiting to retry."""


def normalized_url(url: str) -> str:
    """The mount URL as stored with the cursor: scheme and host in lower case, one trailing slash."""
    parts = urllib.parse.urlsplit(url.strip())
    path = parts.path.rstrip("/") + "/"
    return urllib.parse.urlunsplit((parts.scheme.lower(), parts.netloc.lower(), path, "", ""))


def _reason(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body[:300].decode("utf-8", "replace")
    if isinstance(data, dict) and "detail" in data:
        return str(data["detail"])
    return str(data)[:300]


class PullClient:
    """Fetches pages from ``<url>pull/<cqrs_id>/`` with a bearer token."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = 30.0,
        retries: int = 5,
        stop: StopFlag | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.url = normalized_url(url)
        self.token = token
        self.timeout = timeout
        self.retries = retries
        self.stop = stop or StopFlag()
        self.backoff = backoff or Backoff(initial=0.5, maximum=10.0)

    def page_url(self, cqrs_id: str, after: str | None, limit: int | None) -> str:
        query: dict[str, Any] = {}
        if after:
            query["after"] = after
        if limit is not None:
            query["limit"] = limit
        url = f"{self.url}pull/{urllib.parse.quote(cqrs_id, safe='')}/"
        return f"{url}?{urllib.parse.urlencode(query)}" if query else url

    def get(self, url: str) -> bytes:
        """The body of a ``GET url`` with the bearer token (``urllib.error.HTTPError`` for an error
        status)."""
        request = urllib.request.Request(
            url,
            headers={"Authorization": f"Bearer {self.token}", "Accept": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            return bytes(response.read())

    def _page(self, url: str) -> dict[str, Any]:
        # Numbers keep their literal (exact decimals), NaN/Infinity are read as the wire has them.
        data = encoding.loads(self.get(url))
        if not isinstance(data, dict) or not isinstance(data.get("items"), list):
            raise MasterUnavailable(f"unexpected answer from {url}: not a pull page")
        return data

    def fetch(self, cqrs_id: str, after: str | None, limit: int | None = None) -> dict[str, Any]:
        """The page after cursor ``after`` (None: a new pull): ``{"items", "next", "has_more"}``."""
        url = self.page_url(cqrs_id, after, limit)
        failures = 0
        while True:
            try:
                data = self._page(url)
            except urllib.error.HTTPError as exc:
                detail = _reason(exc.read())
                if exc.code < 500:
                    raise PullRefused(exc.code, detail) from None
                problem = f"HTTP {exc.code}: {detail}"
            except (urllib.error.URLError, OSError, ValueError) as exc:
                problem = repr(getattr(exc, "reason", exc))
            else:
                self.backoff.reset()
                return data
            failures += 1
            if failures > self.retries:
                raise MasterUnavailable(
                    f"{self.url} failed {failures} time(s) in a row, last: {problem}"
                )
            delay = self.backoff.next()
            logger.warning(
                "CQRS pull %s: %s; retry %d/%d in %.1fs",
                cqrs_id,
                problem,
                failures,
                self.retries,
                delay,
            )
            if self.stop.wait(delay):
                raise Stopped("stopped while waiting to retry")


__all__ = [
    "MasterUnavailable",
    "PullClient",
    "PullClientError",
    "PullRefused",
    "Stopped",
    "normalized_url",
]
