"""Every admin action of the ops pages is recorded twice: in Django's admin log (``LogEntry``,
shown under "Recent actions" and in each object's history) and on the ``django-cqrs.admin``
logger (user, action, what it touched)."""

from __future__ import annotations

import logging
from typing import Any

from django.apps import apps

#: ``django.contrib.admin.models.CHANGE`` (that module defines a model: not imported before setup).
CHANGE = 2

logger = logging.getLogger("django-cqrs.admin")


def record(request: Any, model: Any, message: str, obj: Any = None, flag: int = CHANGE) -> None:
    """Log ``message`` for the request's user: about ``obj`` or, without one, about ``model``."""
    user = request.user
    content_types = apps.get_model("contenttypes", "ContentType").objects
    apps.get_model("admin", "LogEntry").objects.create(
        user_id=user.pk,
        content_type=content_types.get_for_model(model, for_concrete_model=False),
        object_id=str(obj.pk) if obj is not None else "",
        object_repr=str(obj)[:200]
        if obj is not None
        else str(model._meta.verbose_name_plural)[:200],
        action_flag=flag,
        change_message=message,
    )
    logger.info("CQRS admin: %s by %s", message, user.get_username(), extra={"user_id": user.pk})


__all__ = ["record"]
