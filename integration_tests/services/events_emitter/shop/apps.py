from django.apps import AppConfig


class ShopConfig(AppConfig):
    name = "shop"
    default_auto_field = "django.db.models.AutoField"

    def ready(self):
        from dj_cqrs.events import register_source
        from shop.sources import challenge_events

        register_source(self.get_model("Challenge"), challenge_events)
