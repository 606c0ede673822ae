"""The master side: capture, outbox, publishing. Public helpers re-exported here:
:func:`last_revision` and :func:`recording` (read-your-writes, :mod:`dj_cqrs.master.committed`)."""

from dj_cqrs.master.committed import Revision, last_revision, recording, token_for

__all__ = ["Revision", "last_revision", "recording", "token_for"]
