"""``make demo-web``'s console views (``examples/web_console``) through Django's test client
machinery, with the services' APIs and the processes replaced by small fakes: how the master's
and the replica's states are merged (per-row verdicts, counts, lag), where each event stands,
and what the switches and the forwarded actions do. The page itself is driven in Chromium by
``integration_tests/test_demo_web.py``; the consumer's outcome file is tested here too."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest
from django.test import RequestFactory

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


@pytest.fixture(scope="module", autouse=True)
def _examples_on_path() -> Any:
    sys.path.insert(0, str(EXAMPLES))
    sys.path.insert(0, str(EXAMPLES / "replica_service"))
    yield
    sys.path.remove(str(EXAMPLES))
    sys.path.remove(str(EXAMPLES / "replica_service"))


NOW = 1_800_000_000_000.0  # ms


class FakeApi:
    def __init__(self, name: str, answers: dict[str, tuple[int, dict[str, Any]]]) -> None:
        self.name = name
        self.answers = answers
        self.calls: list[tuple[str, Any]] = []

    def call(self, path: str, data: Any = None, timeout: float = 30) -> tuple[int, dict[str, Any]]:
        self.calls.append((path, data))
        return self.answers[path.split("?")[0]]


class FakeProcess:
    def __init__(self) -> None:
        self.running = True

    def start(self) -> None:
        self.running = True

    def stop(self) -> None:
        self.running = False


class FakeSwitch:
    how = "test"

    def __init__(self) -> None:
        self.cut = False

    def set(self, cut: bool) -> None:
        self.cut = cut


def _event(pk: int, revision: int, published: float | None, attempts: int = 0) -> dict[str, Any]:
    return {
        "id": pk * 10 + revision,
        "cqrs_id": "product",
        "signal": "SAVE",
        "pk": str(pk),
        "revision": revision,
        "committed": NOW - 5000,
        "published": published,
        "attempts": attempts,
        "last_error": "PublishFailed('cut')" if attempts else "",
    }


@pytest.fixture
def console() -> Any:
    from web_console import runtime

    master = FakeApi(
        "master",
        {
            "/demo/state": (
                200,
                {
                    "rows": [
                        [1, "SKU-1", "Desk", "10.00", True, 2, NOW - 100],  # in sync
                        [2, "SKU-2", "Lamp", "12.00", True, 3, NOW - 4000],  # behind (replica at 2)
                        [
                            3,
                            "SKU-3",
                            "Chair",
                            "30.00",
                            False,
                            0,
                            NOW - 2000,
                        ],  # not on the replica yet
                    ],
                    "events": [
                        _event(2, 3, None, attempts=1),
                        _event(3, 0, NOW - 1900),
                        _event(1, 2, NOW - 90),
                        _event(9, 1, NOW - 50),
                    ],
                    "status": {
                        "outbox": [
                            {
                                "pending": 1,
                                "oldest_pending_age": 4.0,
                                "failed": 1,
                                "last_error": "PublishFailed('cut')",
                            }
                        ],
                        "unreachable": [],
                    },
                },
            ),
            "/demo/products": (200, {"id": 4, "revision": 0}),
        },
    )
    replica = FakeApi(
        "replica",
        {
            "/demo/state": (
                200,
                {
                    "rows": [
                        [1, "SKU-1", "Desk", "10.00", True, 2],
                        [2, "SKU-2", "Lamp (old)", "11.00", True, 2],
                        [
                            8,
                            "SKU-8",
                            "Gone",
                            "1.00",
                            True,
                            0,
                        ],  # deleted on the master, not yet here
                    ],
                    "outcomes": {
                        "product:1:2": {
                            "cqrs_outcome": "ack",
                            "cqrs_status": "applied",
                            "time": NOW - 80,
                        },
                        "product:9:1": {
                            "cqrs_outcome": "dead_letter",
                            "cqrs_reason": "missing_required_fields",
                            "time": NOW - 40,
                        },
                    },
                    "status": {
                        "replica": {
                            "queue": {"name": "q", "ready": 1, "lag": None},
                            "dead_letters": 1,
                        },
                        "unreachable": [],
                    },
                },
            ),
        },
    )
    flushed: list[bool] = []
    instance = runtime.Runtime(
        master=master,
        replica=replica,
        consumer=FakeProcess(),
        switch=FakeSwitch(),  # type: ignore[arg-type]
        flush_outbox=lambda: flushed.append(True),
        facts={},
    )
    instance.flushed = flushed  # type: ignore[attr-defined]
    runtime.install(instance)
    return instance


def _get_state(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    from web_console import views

    monkeypatch.setattr(views.time, "time", lambda: NOW / 1000)
    response = views.state(RequestFactory().get("/api/state"))
    assert response.status_code == 200
    return json.loads(response.content)


def test_state_merges_the_two_sides(console: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    state = _get_state(monkeypatch)
    assert {row["id"]: row["sync"] for row in state["rows"]} == {
        1: "in_sync",
        2: "behind",
        3: "missing",
        8: "deleting",
    }
    assert state["counts"] == {"in_sync": 1, "behind": 1, "missing": 1, "deleting": 1, "differs": 0}
    assert state["rows"][1]["replica"] == {
        "sku": "SKU-2",
        "name": "Lamp (old)",
        "price": "11.00",
        "in_stock": True,
        "revision": 2,
    }
    # The lag is the age of the oldest master change the replica does not have (row 2's).
    assert state["lag"] == pytest.approx(4.0)
    assert state["master"]["count"] == 3 and state["replica"]["count"] == 3
    # The replica was asked for the outcomes of exactly the master's events.
    path = console.replica.calls[0][0]
    assert path == "/demo/state?keys=product:2:3,product:3:0,product:1:2,product:9:1"


def test_each_event_stage(console: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    events = {(e["pk"], e["revision"]): e for e in _get_state(monkeypatch)["events"]}
    assert events[("2", 3)]["stage"] == "committed"
    assert events[("2", 3)]["words"] == "kept in the outbox after 1 failed publish"
    assert (events[("3", 0)]["stage"], events[("3", 0)]["words"]) == ("published", "in the broker")
    assert (events[("1", 2)]["stage"], events[("1", 2)]["applied"]) == ("applied", NOW - 80)
    assert (events[("9", 1)]["stage"], events[("9", 1)]["words"]) == (
        "dead",
        "dead-lettered: missing_required_fields",
    )
    console.consumer.running = False
    events = {(e["pk"], e["revision"]): e for e in _get_state(monkeypatch)["events"]}
    assert events[("3", 0)]["words"] == "in the broker, waiting for the consumer"


def test_health_comes_from_the_status_reports(
    console: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    health = _get_state(monkeypatch)["health"]
    assert health["outbox_pending"] == 1
    assert health["outbox_oldest"] == 4.0
    assert health["outbox_failed"] == 1
    assert health["outbox_last_error"] == "PublishFailed('cut')"
    assert (health["queue_ready"], health["dead_letters"]) == (1, 1)


def test_a_service_down_is_reported_not_raised(
    console: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from web_console.runtime import ServiceDown

    def down(path: str, data: Any = None, timeout: float = 30) -> Any:
        raise ServiceDown("the replica service does not answer: refused")

    monkeypatch.setattr(console.replica, "call", down)
    state = _get_state(monkeypatch)
    assert state["replica"] == {
        "ok": False,
        "error": "the replica service does not answer: refused",
        "count": 0,
    }
    assert state["lag"] is None
    assert {row["id"]: row["sync"] for row in state["rows"]}[1] == "missing"


def _post(view: Any, body: dict[str, Any], **kwargs: Any) -> Any:
    request = RequestFactory().post("/", data=json.dumps(body), content_type="application/json")
    return view(request, **kwargs)


def test_switches_and_forwarded_actions(console: Any) -> None:
    from web_console import views

    assert json.loads(_post(views.consumer, {"running": False}).content) == {"running": False}
    assert console.consumer.running is False
    assert json.loads(_post(views.consumer, {"running": True}).content) == {"running": True}
    assert json.loads(_post(views.broker, {"cut": True}).content) == {"cut": True}
    assert console.flushed == []
    assert json.loads(_post(views.broker, {"cut": False}).content) == {"cut": False}
    assert console.flushed == [True]  # restoring publishes what the outbox kept at once
    response = _post(views.create, {"name": "Mat", "price": "9.00"})
    assert (response.status_code, json.loads(response.content)) == (200, {"id": 4, "revision": 0})
    assert console.master.calls[-1] == ("/demo/products", {"name": "Mat", "price": "9.00"})
    assert _post(views.letters_action, {}, action="drop-table").status_code == 404
    assert views.state(RequestFactory().post("/api/state")).status_code == 405


def test_outcome_lines(tmp_path: Path) -> None:
    from storefront.outcomes import OutcomeFileHandler, read_new

    path = tmp_path / "outcomes.jsonl"
    logger = logging.getLogger("test.demo_web.outcomes")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = OutcomeFileHandler(str(path))
    logger.addHandler(handler)
    try:
        logger.info(
            "CQRS applied: %s",
            "x",
            extra={
                "cqrs_id": "product",
                "cqrs_pk": 3,
                "cqrs_revision": 1,
                "cqrs_outcome": "ack",
                "cqrs_status": "applied",
            },
        )
    finally:
        logger.removeHandler(handler)
    lines, offset = read_new(str(path), 0)
    assert [
        (line["cqrs_id"], line["cqrs_pk"], line["cqrs_revision"], line["cqrs_status"], line["text"])
        for line in lines
    ] == [("product", 3, 1, "applied", "CQRS applied: x")]
    with open(path, "a") as handle:
        handle.write('{"cqrs_id": "product", "cqrs_pk"')  # a line still being written
    assert read_new(str(path), offset) == ([], offset)
    assert read_new(str(tmp_path / "missing.jsonl"), 0) == ([], 0)
