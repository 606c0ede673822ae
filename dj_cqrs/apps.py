"""Django app config: registers the system checks and installs the replica's consume handler
as the transports' default, with the route of domain events (:mod:`dj_cqrs.core.handlers`).
Nothing else happens at start-up."""

from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate

from dj_cqrs.core.handlers import Route, add_route, set_default_handler
from dj_cqrs.master import triggers
from dj_cqrs.registry import master_registry


class CQRSConfig(AppConfig):
    name = "dj_cqrs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported once the models are loaded: the checks are registered when the app registry is
        # ready, as Django recommends, and the replica layer defines abstract models.
        from dj_cqrs import checks  # noqa: F401 - registers the checks
        from dj_cqrs.events import consuming, registry
        from dj_cqrs.replica.batch import handle_batch_through_outages

        # ``transport.consume()`` / ``MemoryTransport.join()`` called without a handler
        # (django-cqrs code, tests) apply to this service's replica models; domain events go to
        # their handlers (the queue is bound with the handlers' patterns).
        set_default_handler(handle_batch_through_outages)
        add_route(
            Route(
                name="events",
                accepts=consuming.accepts,
                handler=consuming.handle_events_through_outages,
                binding_keys=registry.binding_keys,
            )
        )
        post_migrate.connect(_install_triggers, sender=self, dispatch_uid="dj_cqrs_install_triggers")


def _install_triggers(sender: AppConfig, using: str = "default", **kwargs: object) -> None:
    """Install the triggers of ``CQRS_DB_TRIGGERS`` models after ``migrate`` (PostgreSQL)."""
    if any(triggers.wanted(m) for m in master_registry):
        try:
            import pgtrigger  # noqa: F401 - optional: django-pgtrigger (extra [postgres])
        except ImportError:
            return  # reported by the system check dj_cqrs.E050
        triggers.install(using)
