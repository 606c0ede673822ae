"""Who may pull: ``Authorization: Bearer <token>`` against ``CQRS['http']['tokens']`` and a master
model's ``CQRS_HTTP_TOKENS``, compared in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import Any

from django.http import HttpRequest

from dj_cqrs.conf import cqrs_settings, resolve_callable


def bearer_token(request: HttpRequest) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None


def _matches(token: str, allowed: Any) -> bool:
    """Whether ``token`` is accepted by ``allowed``: an iterable of tokens (every one compared, in
    constant time) or a callable ``f(token) -> bool``."""
    if allowed is None:
        return False
    if callable(allowed):
        return bool(allowed(token))
    given = token.encode()
    found = False
    for candidate in allowed if isinstance(allowed, Iterable) else ():
        if isinstance(candidate, str) and hmac.compare_digest(given, candidate.encode()):
            found = True
    return found


def token_valid(token: str | None) -> bool:
    """Whether ``token`` is one of ``CQRS['http']['tokens']`` (None accepts nobody)."""
    if not token:
        return False
    tokens = cqrs_settings.http.tokens
    if isinstance(tokens, str):
        tokens = resolve_callable(tokens)
    return _matches(token, tokens)


def model_allows(model: Any, token: str) -> bool:
    """Whether a master model lets ``token`` pull it: its ``CQRS_HTTP_TOKENS`` (an iterable of
    tokens, or a callable, or its dotted path), every valid token when it has none."""
    allowed = getattr(model, "CQRS_HTTP_TOKENS", None)
    if allowed is None:
        return True
    if isinstance(allowed, str):
        allowed = resolve_callable(allowed)
    return _matches(token, allowed)


__all__ = ["bearer_token", "model_allows", "token_valid"]
