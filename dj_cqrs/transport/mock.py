"""``TransportMock``: a transport that publishes nowhere (django-cqrs's test helper)."""

from __future__ import annotations

from typing import Any

from dj_cqrs.dataclasses import TransportPayload
from dj_cqrs.transport.base import BaseTransport


class TransportMock(BaseTransport):
    """``produce`` returns the payload and sends nothing; ``consume`` returns at once."""

    background_publish = False

    def produce(self, payload: TransportPayload) -> TransportPayload:
        return payload

    def consume(self, *args: Any, **kwargs: Any) -> None:
        return None
