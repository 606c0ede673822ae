from django.apps import AppConfig


class SinkConfig(AppConfig):
    name = "sink"
    default_auto_field = "django.db.models.AutoField"

    def ready(self):
        import sink.handlers  # noqa: F401 - registers the handlers
