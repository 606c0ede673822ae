"""The replica side: decoding, rules, apply paths, the worker and dead letters. Public helper
re-exported here: :func:`wait_for` (read-your-writes, :mod:`dj_cqrs.replica.wait`)."""

from dj_cqrs.replica.wait import applied, wait_for

__all__ = ["applied", "wait_for"]
