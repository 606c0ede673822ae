"""Custom signals of master models (django-cqrs names).

``post_bulk_create(sender, instances, using)`` and ``post_update(sender, instances, using)`` make the
master publish one event per instance; ``Model.cqrs.bulk_create``/``bulk_update`` send them, and
``Model.call_post_bulk_create``/``call_post_update`` let you send them yourself.
"""

from __future__ import annotations

from typing import Any

from django.dispatch import Signal

post_bulk_create = Signal()
post_update = Signal()


class MasterSignals:
    """django-cqrs compatible facade over :mod:`dj_cqrs.master.signals`."""

    @classmethod
    def register_model(cls, model_cls: Any) -> None:
        from dj_cqrs.master import signals

        signals.connect(model_cls)

    @classmethod
    def post_save(cls, sender: Any, **kwargs: Any) -> None:
        from dj_cqrs.master import signals

        signals.on_post_save(sender, **kwargs)

    @classmethod
    def post_delete(cls, sender: Any, **kwargs: Any) -> None:
        from dj_cqrs.master import signals

        signals.on_post_delete(sender, **kwargs)

    @classmethod
    def post_bulk_create(cls, sender: Any, **kwargs: Any) -> None:
        from dj_cqrs.master import signals

        signals.on_post_bulk_create(sender, **kwargs)

    @classmethod
    def post_bulk_update(cls, sender: Any, **kwargs: Any) -> None:
        from dj_cqrs.master import signals

        signals.on_post_update(sender, **kwargs)


__all__ = ["MasterSignals", "post_bulk_create", "post_update"]
