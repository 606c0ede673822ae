"""Which hooks of a master model the model overrides.

dj_cqrs skips the work of a hook a model leaves as it is (the outbox builds no ``meta`` for the
default ``get_cqrs_meta``, publishing reads plain values instead of calling ``to_cqrs_dict`` ...).
The default implementations are the methods of ``RawMasterMixin`` marked with
:func:`default_hook`; a model overrides a hook when what it has under that name is not the default.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

_Hook = TypeVar("_Hook", bound=Callable[..., Any])

#: ``{hook name: default implementation}``, filled when ``RawMasterMixin`` is defined.
_defaults: dict[str, Callable[..., Any]] = {}

#: Public hooks of master models that dj_cqrs's own batched paths (publishing, ``cqrs_sync``,
#: ``cqrs_bulk_dump``, the admin action) call only when a model overrides them; the answer is
#: found once per model class (:func:`overrides`).
OVERRIDABLE_HOOKS = ("to_cqrs_dict", "get_tracked_fields_data", "cqrs_sync")
_OVERRIDES_ATTR = "_cqrs_overridden_hooks"


def default_hook(func: _Hook) -> _Hook:
    """Mark ``func`` as the default implementation of the master hook of the same name."""
    _defaults[func.__name__] = func
    return func


def overridden(model: Any, hook: str) -> bool:
    """Whether ``model`` (or a base of it) replaces the default ``hook``, as it is now."""
    return getattr(model, hook, None) is not _defaults.get(hook)


def overrides(model: Any, hook: str) -> bool:
    """:func:`overridden` for one of :data:`OVERRIDABLE_HOOKS`, found once per model class."""
    found = model.__dict__.get(_OVERRIDES_ATTR)
    if found is None:
        found = frozenset(name for name in OVERRIDABLE_HOOKS if overridden(model, name))
        setattr(model, _OVERRIDES_ATTR, found)
    return hook in found


def forget_cached(model: Any) -> None:
    if _OVERRIDES_ATTR in model.__dict__:
        delattr(model, _OVERRIDES_ATTR)
