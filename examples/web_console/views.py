"""The console's page and its JSON API (the browser polls ``api/state`` twice a second)."""

from __future__ import annotations

import json
import time
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST

from .runtime import Api, ServiceDown, current

#: Products shown in the two tables (the lowest ids); the counts cover all of them.
ROWS = 12
COLUMNS = ("sku", "name", "price", "in_stock", "revision")


@require_GET
def page(request: HttpRequest) -> HttpResponse:
    runtime = current()
    return render(request, "web_console/index.html", {"facts": runtime.facts, "rows": ROWS})


def _fetch(api: Api, path: str) -> tuple[dict[str, Any] | None, str]:
    try:
        code, data = api.call(path, timeout=10)
    except ServiceDown as exc:
        return None, str(exc)
    if code != 200:
        return None, str(data.get("error") or f"HTTP {code}")
    return data, ""


def _stage(
    event: dict[str, Any], outcome: dict[str, Any] | None, consumer_running: bool
) -> tuple[str, str]:
    """``(stage, words)`` of one event: where it is now."""
    if outcome is not None:
        action, status, reason = (
            outcome.get("cqrs_outcome"),
            outcome.get("cqrs_status"),
            outcome.get("cqrs_reason"),
        )
        if action == "ack":
            if status == "applied":
                return "applied", "applied"
            return "ignored", f"ignored: {str(status).replace('_', ' ')}"
        if action == "dead_letter":
            return "dead", f"dead-lettered: {reason}"
        return "retrying", f"retrying: {reason}"
    if event["published"] is not None:
        return (
            "published",
            "in the broker" if consumer_running else "in the broker, waiting for the consumer",
        )
    if event["attempts"]:
        attempts = event["attempts"]
        return (
            "committed",
            f"kept in the outbox after {attempts} failed publish{'es' if attempts != 1 else ''}",
        )
    return "committed", "in the outbox"


@require_GET
def state(request: HttpRequest) -> JsonResponse:
    runtime = current()
    now = time.time() * 1000
    master, master_error = _fetch(runtime.master, "/demo/state")
    events = (master or {}).get("events", [])
    keys = ",".join(f"{e['cqrs_id']}:{e['pk']}:{e['revision']}" for e in events)
    replica, replica_error = _fetch(runtime.replica, f"/demo/state?keys={keys}")
    consumer_running = runtime.consumer.running

    master_rows = {row[0]: row for row in (master or {}).get("rows", [])}
    replica_rows = {row[0]: row for row in (replica or {}).get("rows", [])}
    counts = {"in_sync": 0, "behind": 0, "missing": 0, "deleting": 0, "differs": 0}
    oldest_change: float | None = None
    verdicts: dict[int, str] = {}
    for pk in master_rows.keys() | replica_rows.keys():
        mine, theirs = master_rows.get(pk), replica_rows.get(pk)
        if mine is None:
            verdict = "deleting"
        elif theirs is None:
            verdict = "missing"
        elif theirs[5] < mine[5]:
            verdict = "behind"
        elif list(theirs[1:6]) == list(mine[1:6]):
            verdict = "in_sync"
        else:
            verdict = "differs"
        counts[verdict] += 1
        verdicts[pk] = verdict
        if mine is not None and verdict != "in_sync" and mine[6] is not None:
            oldest_change = mine[6] if oldest_change is None else min(oldest_change, mine[6])
    outcomes = (replica or {}).get("outcomes", {})
    flow = []
    for event in events:
        outcome = outcomes.get(f"{event['cqrs_id']}:{event['pk']}:{event['revision']}")
        stage, words = _stage(event, outcome, consumer_running)
        if verdicts.get(int(event["pk"]) if str(event["pk"]).isdigit() else -1) == "deleting":
            oldest_change = (
                event["committed"]
                if oldest_change is None
                else min(oldest_change, event["committed"])
            )
        flow.append(
            {
                **event,
                "applied": outcome.get("time") if outcome else None,
                "stage": stage,
                "words": words,
            }
        )

    def cells(row: list[Any] | None) -> dict[str, Any] | None:
        return None if row is None else dict(zip(COLUMNS, row[1:6], strict=True))

    shown = sorted(master_rows.keys() | replica_rows.keys())[:ROWS]
    rows = [
        {
            "id": pk,
            "master": cells(master_rows.get(pk)),
            "replica": cells(replica_rows.get(pk)),
            "sync": verdicts[pk],
        }
        for pk in shown
    ]
    outbox = (master or {}).get("status", {}).get("outbox", [])
    stats = ((replica or {}).get("status") or {}).get("replica") or {}
    queue = stats.get("queue") or {}
    pending = sum(item["pending"] for item in outbox)
    ages = [item["oldest_pending_age"] for item in outbox if item["oldest_pending_age"] is not None]
    errors = [item["last_error"] for item in outbox if item["last_error"]]
    unreachable = [
        f"{item['component']} {item['name']}: {item['error']}"
        for part in (master, replica)
        for item in ((part or {}).get("status") or {}).get("unreachable", [])
    ]
    return JsonResponse(
        {
            "now": now,
            "consumer": {"running": consumer_running},
            "broker": {"cut": runtime.switch.cut, "how": runtime.switch.how},
            "master": {"ok": master is not None, "error": master_error, "count": len(master_rows)},
            "replica": {
                "ok": replica is not None,
                "error": replica_error,
                "count": len(replica_rows),
            },
            "rows": rows,
            "counts": counts,
            "lag": None
            if replica is None
            else (0.0 if oldest_change is None else max(0.0, (now - oldest_change) / 1000)),
            "events": flow,
            "health": {
                "outbox_pending": pending if master is not None else None,
                "outbox_oldest": max(ages) if ages else None,
                "outbox_failed": sum(item["failed"] for item in outbox),
                "outbox_last_error": errors[0] if errors else "",
                "queue_name": queue.get("name"),
                "queue_ready": queue.get("ready"),
                "queue_lag": queue.get("lag"),
                "dead_letters": stats.get("dead_letters"),
                "unreachable": unreachable,
            },
        }
    )


def _body(request: HttpRequest) -> dict[str, Any]:
    try:
        data = json.loads(request.body or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _forward(api: Api, path: str, data: dict[str, Any]) -> JsonResponse:
    try:
        code, answer = api.call(path, data)
    except ServiceDown as exc:
        return JsonResponse({"error": str(exc)}, status=502)
    return JsonResponse(answer, status=code)


@require_POST
def create(request: HttpRequest) -> JsonResponse:
    return _forward(current().master, "/demo/products", _body(request))


@require_POST
def update(request: HttpRequest, pk: int) -> JsonResponse:
    return _forward(current().master, f"/demo/products/{pk}", _body(request))


@require_POST
def delete(request: HttpRequest, pk: int) -> JsonResponse:
    return _forward(current().master, f"/demo/products/{pk}/delete", {})


@require_POST
def bulk(request: HttpRequest) -> JsonResponse:
    return _forward(current().master, "/demo/bulk", _body(request))


@require_POST
def consumer(request: HttpRequest) -> JsonResponse:
    runtime = current()
    runtime.set_consumer(bool(_body(request).get("running")))
    return JsonResponse({"running": runtime.consumer.running})


@require_POST
def broker(request: HttpRequest) -> JsonResponse:
    runtime = current()
    runtime.set_broker(bool(_body(request).get("cut")))
    return JsonResponse({"cut": runtime.switch.cut})


@require_GET
def letters(request: HttpRequest) -> JsonResponse:
    runtime = current()
    try:
        code, answer = runtime.replica.call("/demo/dead-letters")
    except ServiceDown as exc:
        return JsonResponse({"error": str(exc)}, status=502)
    return JsonResponse(answer, status=code)


@require_POST
def letters_action(request: HttpRequest, action: str) -> JsonResponse:
    if action not in ("send", "retry", "purge"):
        return JsonResponse({"error": "unknown action"}, status=404)
    return _forward(current().replica, f"/demo/dead-letters/{action}", {})
