"""Workload modules; importing one registers its workloads (see ``framework.workload``)."""

from workloads import reconcile  # noqa: F401
