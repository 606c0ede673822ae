"""The broker URL(s) of ``CQRS['url']``: one URL, or the nodes of a cluster.

``CQRS['url']`` is a URL string (as in django-cqrs), a list or tuple of URLs (one per node of a
RabbitMQ cluster: pika's multi-host form, a sequence of connection parameters tried in order), or
one string of URLs separated by ``;`` (kombu's failover form, handy in an environment variable).
Pure string handling: no driver is imported here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import unquote

#: A URL's scheme, as every part of a ``;``-separated list must start.
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url_value(value: object) -> bool:
    """Whether ``value`` is a valid shape for ``CQRS['url']``: None, a string, or a non-empty
    list or tuple of non-empty strings."""
    if value is None or isinstance(value, str):
        return True
    return (
        isinstance(value, (list, tuple))
        and bool(value)
        and all(isinstance(url, str) and url.strip() for url in value)
    )


def broker_urls(value: str | Sequence[str] | None) -> list[str]:
    """The URLs ``value`` names, in order: ``[]`` for None or ``""``; ``[value]`` for one URL
    (unchanged, whatever it contains); each part of a ``;``-separated string whose every part
    starts with a scheme (``amqp://a;amqp://b``); each item of a list or tuple."""
    if value is None:
        return []
    if isinstance(value, str):
        if not value:
            return []
        parts = [part.strip() for part in value.split(";")]
        parts = [part for part in parts if part]
        if len(parts) > 1 and all(_SCHEME.match(part) for part in parts):
            return parts
        return [value]
    if isinstance(value, (list, tuple)):
        return [str(url) for url in value]
    return []  # not a URL setting at all (dj_cqrs.E005 reports it)


def is_cluster(value: str | Sequence[str] | None) -> bool:
    """Whether ``value`` names more than one broker node."""
    return len(broker_urls(value)) > 1


def url_scheme(url: str) -> str:
    """The scheme of ``url`` in lower case (``""`` when it has none)."""
    scheme, sep, _rest = url.partition("://")
    return scheme.lower() if sep else ""


def url_vhost(url: str) -> str:
    """The AMQP virtual host ``url`` names, as pika reads it: the first segment of its path,
    URL-decoded; ``/`` when there is none."""
    _scheme, sep, rest = url.partition("://")
    if not sep:
        return "/"
    rest = rest.partition("?")[0].partition("#")[0]
    path = rest.partition("/")[2].split("/")[0]
    return unquote(path) if path else "/"


def without_password(url: str) -> str:
    """``url`` with the password of its user info replaced by ``***`` (for messages)."""
    scheme, sep, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    userinfo, at, host = netloc.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.partition(':')[0]}:***@{host}{slash}{path}"


__all__ = [
    "broker_urls",
    "is_cluster",
    "is_url_value",
    "url_scheme",
    "url_vhost",
    "without_password",
]
