"""URLs of the master service when it serves HTTP (dj_cqrs only: IT_HTTP_TOKENS is set)."""

from django.urls import include, path

urlpatterns = [path("cqrs/", include("dj_cqrs.urls"))]
