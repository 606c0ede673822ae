"""``dj_cqrs.views.metrics``: the master-side metrics of a web process in Prometheus text.

``cqrs_outbox_pending`` and ``cqrs_outbox_oldest_pending_seconds`` are read from the outbox when
scraped; the counters are this process's (``CQRS["metrics"] = True``), or every process's when
``PROMETHEUS_MULTIPROC_DIR`` is set (gunicorn and other multi-process servers). Needs
prometheus-client (the ``[metrics]`` extra); without it the view answers 501.

Only a staff user or a request with ``Authorization: Bearer <token>`` accepted by
``CQRS["http"]["tokens"]`` may read it (401 otherwise); see docs/operations.md.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from dj_cqrs import metrics as cqrs_metrics
from dj_cqrs.http.auth import bearer_token, token_valid
from dj_cqrs.master.outbox.backlog import pending_everywhere


def _allowed(request: HttpRequest) -> bool:
    user = getattr(request, "user", None)
    if user is not None and getattr(user, "is_active", False) and getattr(user, "is_staff", False):
        return True
    token = bearer_token(request)
    return token is not None and token_valid(token)


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text exposition of the master-side metrics (see the module docstring)."""
    if not _allowed(request):
        response = HttpResponse(
            "a staff session or a valid `Authorization: Bearer <token>` is required\n", status=401
        )
        response["WWW-Authenticate"] = "Bearer"
        response["Content-Type"] = "text/plain; charset=utf-8"
        return response
    if not cqrs_metrics.available():
        return HttpResponse(
            "prometheus-client is not installed (pip install 'dj-cqrs[metrics]')\n", status=501
        )
    body, content_type = cqrs_metrics.exposition([cqrs_metrics.OutboxCollector(pending_everywhere)])
    return HttpResponse(body, content_type=content_type)


__all__ = ["metrics"]
