"""Django app config: registers the system checks. Nothing else happens at start-up."""

from __future__ import annotations

from django.apps import AppConfig


class CQRSConfig(AppConfig):
    name = "dj_cqrs"
    verbose_name = "CQRS"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from dj_cqrs import checks  # noqa: F401 - registers the checks
