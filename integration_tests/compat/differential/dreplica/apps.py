from django.apps import AppConfig


class DreplicaConfig(AppConfig):
    name = "dreplica"
    default_auto_field = "django.db.models.AutoField"
