"""Read-your-writes over HTTP: the master returns the revisions a request committed in an
``X-CQRS-Revision`` header; a replica service waits for them before answering a request that
sends the header back.

Master::

    MIDDLEWARE = [..., "dj_cqrs.ops.read_your_writes.RevisionHeaderMiddleware"]   # or
    @revision_header                                                              # per view

Replica::

    MIDDLEWARE = [..., "dj_cqrs.ops.read_your_writes.WaitForRevisionMiddleware"]  # or
    @wait_for_revision(timeout=2)                                                 # per view

The header holds comma-separated tokens ``<cqrs_id>:<pk>:<revision>`` (one per object, its
highest revision). Tokens for CQRS_IDs this replica has no model for, and malformed ones, are
ignored. When the replica has not caught up within the timeout the request is served anyway and
the response carries ``X-CQRS-Stale: 1``.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from dj_cqrs.exceptions import ConfigurationError
from dj_cqrs.master.committed import Revision, recording
from dj_cqrs.registry import replica_registry
from dj_cqrs.replica.wait import wait_for

logger = logging.getLogger("django-cqrs.read_your_writes")

HEADER = "X-CQRS-Revision"
STALE_HEADER = "X-CQRS-Stale"
#: Seconds a replica request waits at most for all its tokens (middleware default).
DEFAULT_TIMEOUT = 2.0
#: Tokens read from one header at most.
MAX_TOKENS = 20


def header_value(revisions: Iterable[Revision]) -> str:
    """The header for committed revisions: one token per object, its highest revision, for the
    first :data:`MAX_TOKENS` objects changed (a replica reads no more; a request that changed
    hundreds of objects would otherwise send a header larger than proxies accept: nginx answers
    502 above its 4 or 8 KB ``proxy_buffer_size``)."""
    latest: dict[tuple[str, str], Revision] = {}
    for item in revisions:
        key = (item.cqrs_id, item.pk)
        if key in latest:
            if item.revision >= latest[key].revision:
                latest[key] = item
        elif len(latest) < MAX_TOKENS:
            latest[key] = item
    return ", ".join(item.token() for item in latest.values())


def parse(value: str) -> list[tuple[str, str, int]]:
    """``(cqrs_id, pk, revision)`` of each well-formed token of a header value."""
    tokens: list[tuple[str, str, int]] = []
    for part in value.split(",")[:MAX_TOKENS]:
        cqrs_id, sep, rest = part.strip().partition(":")
        pk, sep2, revision = rest.rpartition(":")
        if not (sep and sep2 and cqrs_id and pk) or not revision.isdigit():
            continue
        tokens.append((cqrs_id, pk, int(revision)))
    return tokens


def _with_header(get_response: Callable[[Any], Any], request: Any) -> Any:
    with recording() as revisions:
        response = get_response(request)
    if revisions:
        response[HEADER] = header_value(revisions)
    return response


def wait_for_tokens(value: str, timeout: float) -> bool:
    """Wait until every token this replica knows is applied; False if the time ran out."""
    deadline = time.monotonic() + timeout
    caught_up = True
    for cqrs_id, pk, revision in parse(value):
        if cqrs_id not in replica_registry:
            continue
        try:
            if not wait_for(cqrs_id, pk, revision, timeout=max(0.0, deadline - time.monotonic())):
                caught_up = False
        except ConfigurationError:  # a model without rows, a bad primary key: nothing to wait for
            logger.debug("Revision token %s:%s:%s ignored", cqrs_id, pk, revision, exc_info=True)
    return caught_up


def _after_waiting(get_response: Callable[[Any], Any], request: Any, timeout: float) -> Any:
    value = request.headers.get(HEADER)
    caught_up = wait_for_tokens(value, timeout) if value else True
    response = get_response(request)
    if not caught_up:
        response[STALE_HEADER] = "1"
    return response


class RevisionHeaderMiddleware:
    """Master: add ``X-CQRS-Revision`` with the revisions the request committed."""

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        return _with_header(self.get_response, request)


class WaitForRevisionMiddleware:
    """Replica: wait (at most :attr:`timeout` seconds) for the tokens of ``X-CQRS-Revision``."""

    timeout = DEFAULT_TIMEOUT

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        return _after_waiting(self.get_response, request, self.timeout)


def revision_header(view: Callable[..., Any]) -> Callable[..., Any]:
    """View decorator form of :class:`RevisionHeaderMiddleware`."""

    @functools.wraps(view)
    def wrapped(request: Any, *args: Any, **kwargs: Any) -> Any:
        return _with_header(lambda r: view(r, *args, **kwargs), request)

    return wrapped


def wait_for_revision(
    timeout: float = DEFAULT_TIMEOUT,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """View decorator form of :class:`WaitForRevisionMiddleware`."""

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def wrapped(request: Any, *args: Any, **kwargs: Any) -> Any:
            return _after_waiting(lambda r: view(r, *args, **kwargs), request, timeout)

        return wrapped

    return decorate


__all__ = [
    "HEADER",
    "STALE_HEADER",
    "RevisionHeaderMiddleware",
    "WaitForRevisionMiddleware",
    "header_value",
    "parse",
    "revision_header",
    "wait_for_revision",
    "wait_for_tokens",
]
