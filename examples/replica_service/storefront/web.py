"""The replica's side of ``make demo-web``: its copies, what the consumer did, its dead letters.

Only ``examples/demo_web.py``'s console calls it (over 127.0.0.1). The queue figures come from
:func:`dj_cqrs.ops.status.collect`, the dead letters from :mod:`dj_cqrs.replica.dead_letters`
(what ``manage.py cqrs_status`` and ``manage.py cqrs_dead_letters`` use).
"""

from __future__ import annotations

import os
import threading
import uuid
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from dj_cqrs.constants import SignalType
from dj_cqrs.core.names import ERROR_HEADER, RETRIES_HEADER
from dj_cqrs.core.payload import TransportPayload
from dj_cqrs.exceptions import CqrsError
from dj_cqrs.ops import status
from dj_cqrs.replica import dead_letters
from dj_cqrs.transport import get_transport

from .models import ProductRef
from .outcomes import read_new

#: The primary keys of the malformed products the demo sends (far above the master's own).
MALFORMED_PK = 900_000


class _Outcomes:
    """The latest outcome of each ``cqrs_id:pk:revision``, read from the consumer's JSON lines."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.offset = 0
        self.latest: dict[str, dict[str, Any]] = {}
        self.count = 0

    def refresh(self, path: str) -> None:
        with self.lock:
            lines, self.offset = read_new(path, self.offset)
            for line in lines:
                self.latest[
                    f"{line.get('cqrs_id')}:{line.get('cqrs_pk')}:{line.get('cqrs_revision')}"
                ] = line
                self.count += 1
            if len(self.latest) > 50_000:  # a long session: keep the newest half
                keep = list(self.latest.items())[-25_000:]
                self.latest = dict(keep)


_outcomes = _Outcomes()


@require_GET
def state(request: HttpRequest) -> JsonResponse:
    """Every copy (``[id, sku, name, price, in_stock, revision]``), the outcomes of the events
    asked for (``?keys=product:1:2,...``) and the queue figures of ``cqrs_status``."""
    rows = [
        [pk, sku, name, str(price), in_stock, revision]
        for pk, sku, name, price, in_stock, revision in ProductRef.objects.order_by(
            "id"
        ).values_list("id", "sku", "name", "price", "in_stock", "cqrs_revision")
    ]
    path = os.environ.get("DEMO_OUTCOME_LOG", "")
    if path:
        _outcomes.refresh(path)
    keys = [key for key in request.GET.get("keys", "").split(",") if key][:200]
    with _outcomes.lock:
        outcomes = {key: _outcomes.latest[key] for key in keys if key in _outcomes.latest}
        seen = _outcomes.count
    report = status.collect(master=False, replica=True)
    return JsonResponse(
        {"rows": rows, "outcomes": outcomes, "outcome_lines": seen, "status": report.as_dict()},
        json_dumps_params={"default": str},
    )


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


@require_GET
def letters(request: HttpRequest) -> JsonResponse:
    """The first 20 dead letters, read without removing them (``cqrs_dead_letters dump``)."""
    try:
        store = dead_letters.store_for(get_transport())
        found = []
        for letter in dead_letters.browse(store, limit=20):
            data = letter.data or {}
            instance = (
                data.get("instance_data") if isinstance(data.get("instance_data"), dict) else {}
            )
            found.append(
                {
                    "cqrs_id": letter.cqrs_id,
                    "pk": instance.get("id", data.get("instance_pk")),
                    "reason": letter.reason,
                    "error": _text(letter.headers.get(ERROR_HEADER))[:300],
                    "retries": _text(letter.headers.get(RETRIES_HEADER)),
                    "body": letter.text()[:300],
                }
            )
        total = store.count()
    except CqrsError as exc:
        return JsonResponse({"error": str(exc)}, status=503)
    return JsonResponse({"letters": found, "total": total})


@require_POST
def send_malformed(request: HttpRequest) -> JsonResponse:
    """Publish a product event without the required ``name`` and ``price``: the consumer cannot
    apply it and dead-letters it at once (reason ``missing_required_fields``)."""
    pk = MALFORMED_PK + uuid.uuid4().int % 10_000
    payload = TransportPayload(
        SignalType.SAVE,
        ProductRef.CQRS_ID,
        {
            "id": pk,
            "sku": f"BROKEN-{pk}",
            "in_stock": True,
            "cqrs_revision": 0,
            "cqrs_updated": timezone.now().isoformat(),
        },
        pk,
        correlation_id=f"demo-malformed-{pk}",
    )
    try:
        get_transport().produce(payload)
    except CqrsError as exc:
        return JsonResponse({"error": f"could not publish: {exc}"}, status=503)
    return JsonResponse({"pk": pk})


@require_POST
def retry(request: HttpRequest) -> JsonResponse:
    """Re-publish every dead letter to this replica's queue (``cqrs_dead_letters retry``)."""
    try:
        report = dead_letters.retry(dead_letters.store_for(get_transport()))
    except CqrsError as exc:
        return JsonResponse({"error": str(exc)}, status=503)
    return JsonResponse(
        {
            "retried": report.done,
            "malformed": report.malformed,
            "unknown": report.unknown,
            "unroutable": report.unroutable,
        }
    )


@require_POST
def purge(request: HttpRequest) -> JsonResponse:
    """Delete every dead letter (``cqrs_dead_letters purge``)."""
    try:
        report = dead_letters.purge(dead_letters.store_for(get_transport()))
    except CqrsError as exc:
        return JsonResponse({"error": str(exc)}, status=503)
    return JsonResponse({"purged": report.done})
