"""The transactional outbox: master events stored in the transaction of the change.

* :mod:`~dj_cqrs.master.outbox.store`: the outbox table (whether it is used, its model, its rows).
* :mod:`~dj_cqrs.master.outbox.recording`: writing events inside the caller's transaction (the
  event exists if and only if the change commits).
* :mod:`~dj_cqrs.master.outbox.inline`: on PostgreSQL, a save's outbox row written by the statement
  that writes the object (one round trip, no transaction of its own).
* :mod:`~dj_cqrs.master.outbox.publishing`: after commit, claiming rows, publishing them and
  marking them published (used by the immediate dispatcher, :mod:`dj_cqrs.master.dispatcher`, and
  by the relay, :mod:`dj_cqrs.master.relay`).
* :mod:`~dj_cqrs.master.outbox.maintenance`: failed attempts, the age of the backlog, pruning.
"""
