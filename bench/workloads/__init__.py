"""Workload modules; importing one registers its workloads (see ``framework.workload``)."""

from workloads import outbox, reconcile, replica  # noqa: F401
