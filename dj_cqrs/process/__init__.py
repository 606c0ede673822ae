"""Process machinery shared by the long-running commands (``cqrs_consume``, ``cqrs_relay``).

* :mod:`dj_cqrs.process.lifecycle`: the stop flag signal handlers set, and back-off;
* :mod:`dj_cqrs.process.supervisor`: a supervisor of worker processes (restarts, reload, stop).

Nothing here knows what a worker does.
"""
