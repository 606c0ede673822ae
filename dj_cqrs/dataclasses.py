"""django-cqrs import path ``dj_cqrs.dataclasses``: the payload lives in :mod:`dj_cqrs.core.payload`."""

from dj_cqrs.core.payload import TransportPayload

__all__ = ["TransportPayload"]
