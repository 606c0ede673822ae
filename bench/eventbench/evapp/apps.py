from django.apps import AppConfig


class EvappConfig(AppConfig):
    name = "evapp"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        # The handler of the consuming service is chosen by BENCH_EVENTS_HANDLER (none in the
        # emitting process): importing the module registers it.
        from evapp import handlers

        handlers.register()
