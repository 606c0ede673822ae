"""``TransportMock``: a transport that publishes nowhere (django-cqrs's test helper)."""

from __future__ import annotations

from typing import Any

from dj_cqrs.core.event import AnyPayload
from dj_cqrs.transport.base import BaseTransport


class TransportMock(BaseTransport):
    """``produce`` and ``consume`` send and read nothing and return the payload they are given.

    Both are static methods, as in django-cqrs: ``TransportMock.produce(payload)`` works on the
    class as well as on an instance.
    """

    background_publish = False

    @staticmethod
    def produce(payload: AnyPayload) -> AnyPayload:
        return payload

    @staticmethod
    def consume(payload: Any = None, **kwargs: Any) -> Any:
        return payload
