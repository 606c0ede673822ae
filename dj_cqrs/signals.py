"""django-cqrs's ``dj_cqrs.signals``: the custom signals of master models and ``MasterSignals``.

The signals and their receivers live in :mod:`dj_cqrs.master.signals`.
"""

from __future__ import annotations

from typing import Any

from dj_cqrs.master import signals as master_signals
from dj_cqrs.master.signals import post_bulk_create, post_update


class MasterSignals:
    """django-cqrs compatible facade over :mod:`dj_cqrs.master.signals`."""

    @classmethod
    def register_model(cls, model_cls: Any) -> None:
        master_signals.connect(model_cls)

    @classmethod
    def post_save(cls, sender: Any, **kwargs: Any) -> None:
        master_signals.on_post_save(sender, **kwargs)

    @classmethod
    def post_delete(cls, sender: Any, **kwargs: Any) -> None:
        master_signals.on_post_delete(sender, **kwargs)

    @classmethod
    def post_bulk_create(cls, sender: Any, **kwargs: Any) -> None:
        master_signals.on_post_bulk_create(sender, **kwargs)

    @classmethod
    def post_bulk_update(cls, sender: Any, **kwargs: Any) -> None:
        master_signals.on_post_update(sender, **kwargs)


__all__ = ["MasterSignals", "post_bulk_create", "post_update"]
