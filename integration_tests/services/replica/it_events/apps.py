from django.apps import AppConfig


class ItEventsConfig(AppConfig):
    """Installed only with IT_EVENT_HANDLERS=1 (dj_cqrs replicas): a replica that also handles
    domain events, so its queue is bound for them next to its models' keys."""

    name = "it_events"

    def ready(self):
        import it_events.handlers  # noqa: F401 - registers the handler
