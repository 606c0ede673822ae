"""URLs of dj_cqrs's HTTP endpoints: mount them with ``path("cqrs/", include("dj_cqrs.urls"))``.

* ``pull/<cqrs_id>/``: HTTP pull (:mod:`dj_cqrs.http.views`, ``docs/http.md``).
"""

from __future__ import annotations

from django.urls import path

from dj_cqrs.http import views

app_name = "dj_cqrs"

urlpatterns = [
    path("pull/<str:cqrs_id>/", views.pull, name="pull"),
]
