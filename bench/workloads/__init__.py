"""Workload modules; importing one registers its workloads (see ``framework.workload``)."""

from workloads import outbox, reconcile  # noqa: F401
