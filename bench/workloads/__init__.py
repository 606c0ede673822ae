"""Workload modules; importing one registers its workloads (see ``framework.workload``)."""

from workloads import events, observability, outbox, reconcile, replica, scale  # noqa: F401
