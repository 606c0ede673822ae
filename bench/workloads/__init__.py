"""Workload modules; importing one registers its workloads (see ``framework.workload``)."""

from workloads import events, outbox, reconcile, replica  # noqa: F401
