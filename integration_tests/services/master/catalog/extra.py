"""Models of optional apps (``gadgets`` exists only on dj_cqrs with django-pgtrigger)."""

from django.apps import apps


def extra_models():
    if apps.is_installed("gadgets"):
        from gadgets.models import Gadget

        return {"gadget": Gadget}
    return {}


def extra_dumps():
    return {f"it_{name}": model for name, model in extra_models().items()}
