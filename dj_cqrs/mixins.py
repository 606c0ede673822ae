"""django-cqrs import path for the model mixins."""

from dj_cqrs.master.mixins import MasterMixin, RawMasterMixin
from dj_cqrs.replica.mixins import RawReplicaMixin, ReplicaMixin

__all__ = ["MasterMixin", "RawMasterMixin", "RawReplicaMixin", "ReplicaMixin"]
