"""Operations: the status of the outbox and of the replica queues (``cqrs_status``, the health
check backend), the admin pages (outbox, dead letters, tombstones, inbox) and read-your-writes
helpers for HTTP requests.

Nothing here is imported by the layers below; ``dj_cqrs.admin`` imports :mod:`dj_cqrs.ops.admin`
to register the admin pages.
"""
