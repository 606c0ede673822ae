"""URLs of dj_cqrs's HTTP endpoints: mount them with ``path("cqrs/", include("dj_cqrs.urls"))``.

* ``pull/<cqrs_id>/``: HTTP pull (:mod:`dj_cqrs.http.views`, ``docs/http.md``).
* ``metrics/``: Prometheus metrics of the master (:mod:`dj_cqrs.views`, ``docs/operations.md``).
"""

from __future__ import annotations

from django.urls import path

from dj_cqrs import views as cqrs_views
from dj_cqrs.http import views

app_name = "dj_cqrs"

urlpatterns = [
    path("pull/<str:cqrs_id>/", views.pull, name="pull"),
    path("metrics/", cqrs_views.metrics, name="cqrs-metrics"),
]
