"""The pull endpoint: ``GET <mount>/pull/<cqrs_id>/?after=<cursor>&limit=<n>``.

Statuses: 200 a page; 400 a bad ``limit``, a bad cursor or an unknown ``cqrs_id``; 401 no valid
bearer token (with ``WWW-Authenticate: Bearer``); 403 a valid token the model does not accept
(``CQRS_HTTP_TOKENS``); 405 a method other than GET/HEAD; 410 a cursor older than the outbox
retention; 503 a master without the outbox, or whose outbox retention no cursor can outlive.
Every error body is ``{"error": <code>, "detail": <reason>}``; no response may be cached.
"""

from __future__ import annotations

import logging
from typing import Any

from django.http import HttpRequest, HttpResponse

from dj_cqrs import encoding
from dj_cqrs.conf import cqrs_settings
from dj_cqrs.http.auth import bearer_token, model_allows, token_valid
from dj_cqrs.http.cursor import BadCursor, decode
from dj_cqrs.http.pages import PullError, read_page
from dj_cqrs.registry import master_registry

logger = logging.getLogger("django-cqrs.http")

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    405: "method_not_allowed",
    410: "gone",
    503: "unavailable",
}


def _json(status: int, data: Any) -> HttpResponse:
    response = HttpResponse(
        encoding.dumps(data, allow_nan=True), status=status, content_type="application/json"
    )
    response["Cache-Control"] = "no-store"
    return response


def _error(status: int, detail: str) -> HttpResponse:
    response = _json(status, {"error": _CODES.get(status, "error"), "detail": detail})
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="cqrs"'
    elif status == 405:
        response["Allow"] = "GET, HEAD"
    return response


def _limit(text: str | None) -> int:
    http = cqrs_settings.http
    if text is None or text == "":
        return min(int(http.default_limit), int(http.max_limit))
    try:
        value = int(text)
    except ValueError:
        raise PullError(400, f"limit must be an integer, got {text!r}") from None
    if not 1 <= value <= int(http.max_limit):
        raise PullError(400, f"limit must be from 1 to {http.max_limit}, got {value}")
    return value


def pull(request: HttpRequest, cqrs_id: str) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        return _error(405, f"method {request.method} is not allowed: use GET")
    token = bearer_token(request)
    if token is None or not token_valid(token):
        return _error(401, "a valid `Authorization: Bearer <token>` header is required")
    model = master_registry.get_model_by_cqrs_id(cqrs_id)
    if model is None:
        return _error(400, f"unknown cqrs_id {cqrs_id!r}: no master model has it")
    if not model_allows(model, token):
        return _error(403, f"this token may not pull {cqrs_id!r}")
    try:
        limit = _limit(request.GET.get("limit"))
        after = request.GET.get("after")
        try:
            cursor = decode(after, cqrs_id) if after else None
        except BadCursor as exc:
            raise PullError(400, f"bad cursor: {exc}") from None
        page = read_page(model, cursor, limit)
    except PullError as exc:
        return _error(exc.status, exc.reason)
    logger.debug("CQRS pull %s: %d item(s), has_more=%s", cqrs_id, len(page.items), page.has_more)
    return _json(200, {"items": page.items, "next": page.next.encode(), "has_more": page.has_more})


__all__ = ["pull"]
