"""django-cqrs import path ``dj_cqrs.delay``: the delay queue lives in :mod:`dj_cqrs.transport.delay`."""

from dj_cqrs.transport.delay import DelayMessage, DelayQueue, InvalidMaxSize, NotADelayMessage

__all__ = ["DelayMessage", "DelayQueue", "InvalidMaxSize", "NotADelayMessage"]
