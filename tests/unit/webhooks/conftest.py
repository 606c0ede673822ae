from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping

import pytest
from django.test import override_settings

from dj_cqrs.webhooks import sender
from tests.unit.conftest import cqrs_with

FAST = {
    "attempts": 3,
    "retry_delay": 0,
    "max_retry_delay": 0,
    "timeout": 2,
    "lease": 30,
    "batch_size": 4,
}


class FakeSubscriber:
    """A ``sender.put`` stand-in: records every attempt; ``fail(body) -> status`` decides."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict, str]] = []
        #: The extra headers (trace context) of each attempt.
        self.headers: list[dict[str, str]] = []
        self.fail: Callable[[dict], int | None] = lambda body: None

    def __call__(
        self,
        url: str,
        body: bytes,
        secret: str,
        event_id: str,
        timeout: float,
        headers: Mapping[str, str] | None = None,
    ) -> sender.Outcome:
        data = json.loads(body)
        self.calls.append((url, data, event_id))
        self.headers.append(dict(headers or {}))
        status = self.fail(data)
        if status is None:
            return sender.Outcome(200)
        return sender.Outcome(
            status or None, f"HTTP {status}" if status else "ConnectionRefusedError"
        )

    def delivered(self) -> list[tuple[str, int]]:
        """(name, revision) of the attempts that succeeded."""
        return [
            (d["instance_data"]["name"], d["instance_data"]["cqrs_revision"])
            for _, d, _ in self.calls
            if self.fail(d) is None and d.get("instance_data")
        ]


@pytest.fixture
def webhook_settings(transport) -> Iterator[None]:
    with override_settings(CQRS=cqrs_with(webhooks=FAST)):
        yield


@pytest.fixture
def subscriber() -> FakeSubscriber:
    return FakeSubscriber()
