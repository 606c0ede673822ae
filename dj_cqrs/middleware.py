"""``AuditMiddleware``: every event emitted while a request is handled carries who made it.

Add ``"dj_cqrs.middleware.AuditMiddleware"`` to ``MIDDLEWARE`` after
``django.contrib.auth.middleware.AuthenticationMiddleware``. For the duration of each request it
sets the audit context (:mod:`dj_cqrs.audit`) to the request id, the client address, the method
and the path, plus the user's primary key and username when authenticated. The user is read only
when an event is recorded: a request that emits nothing never loads its session or user for this.

The request id is the ``X-Request-ID`` header when it is a sane value (1 to 128 characters out of
letters, digits and ``-_.:``), else a new uuid4 hex; it is echoed in the response's
``X-Request-ID``, and it is the correlation id of the request's events unless
``CQRS['master']['correlation_function']`` decides otherwise.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from dj_cqrs import audit
from dj_cqrs.conf import cqrs_settings
from dj_cqrs.correlation import correlation_scope

#: Request and response header of the request id.
REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def request_id(request: Any) -> str:
    """The request's ``X-Request-ID`` when it is sane, else a new uuid4 hex."""
    given = request.headers.get(REQUEST_ID_HEADER)
    if isinstance(given, str) and _SANE_REQUEST_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


def client_address(request: Any) -> str | None:
    """``REMOTE_ADDR``, or with ``CQRS['audit']['trusted_proxies'] = n`` the n-th address from the
    right of ``X-Forwarded-For`` (the one the outermost trusted proxy saw), when there are that many."""
    remote: str | None = request.META.get("REMOTE_ADDR") or None
    proxies: int = cqrs_settings.audit.trusted_proxies
    if proxies:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if len(hops) >= proxies:
            return str(hops[-proxies][:64])
    return remote


def _user_values(request: Any) -> Callable[[], Mapping[str, Any]]:
    def resolve() -> dict[str, Any]:
        user = getattr(request, "user", None)
        if user is None or not getattr(user, "is_authenticated", False):
            return {}
        pk = user.pk
        return {
            "user_id": pk if isinstance(pk, (int, str)) else str(pk),
            "username": str(user.get_username()),
        }

    return resolve


def _values(request: Any, rid: str) -> tuple[dict[str, Any], Callable[[], Mapping[str, Any]]]:
    fields = cqrs_settings.audit.fields
    values: dict[str, Any] = {
        "request_id": rid,
        "remote_addr": client_address(request),
        "method": request.method,
        "path": request.path,
    }
    user = _user_values(request)
    if fields is None:
        return values, user
    wanted = set(fields)

    def chosen_user() -> dict[str, Any]:
        return {k: v for k, v in user().items() if k in wanted}

    return {k: v for k, v in values.items() if k in wanted}, chosen_user


class AuditMiddleware:
    """Sets the audit context (and the correlation id) for each request; sync and async."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self._async:
            return self.__acall__(request)
        rid = request_id(request)
        values, lazy = _values(request, rid)
        with audit.lazy_context(values, lazy), correlation_scope(rid):
            response = self.get_response(request)
        response[REQUEST_ID_HEADER] = rid
        return response

    async def __acall__(self, request: Any) -> Any:
        rid = request_id(request)
        values, lazy = _values(request, rid)
        with audit.lazy_context(values, lazy), correlation_scope(rid):
            response = await self.get_response(request)
        response[REQUEST_ID_HEADER] = rid
        return response
