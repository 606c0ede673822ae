"""The contract both sides and every transport share, with no side of its own.

* :mod:`dj_cqrs.core.payload`: :class:`~dj_cqrs.core.payload.TransportPayload`, one event;
* :mod:`dj_cqrs.core.messages`: a received message, what the replica decided about it
  (:class:`~dj_cqrs.core.messages.Outcome`) and the handler type a consume loop calls;
* :mod:`dj_cqrs.core.reasons`: why a message was not applied (``Reason``) and what an applied one
  did (``Status``), ``str`` enums whose values are the wire and log words;
* :mod:`dj_cqrs.core.settlement`: what a transport writes when it carries out an outcome
  (the retry body, the ``x-cqrs-*`` failure headers);
* :mod:`dj_cqrs.core.names`: the wire names (routing and binding keys, queue and header names);
* :mod:`dj_cqrs.core.dead_letter_store`: what a transport implements to list, retry and purge
  its dead letters;
* :mod:`dj_cqrs.core.handlers`: the consume handler a transport uses when its caller passes
  none (installed by the app config from the replica layer).

Nothing here imports the master, the replica, a transport or a management command.
"""
