from django.apps import AppConfig


class DmasterConfig(AppConfig):
    name = "dmaster"
    default_auto_field = "django.db.models.AutoField"
