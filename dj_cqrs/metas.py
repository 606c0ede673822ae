"""django-cqrs import path for the model metaclasses."""

from dj_cqrs.master.mixins import MasterMeta
from dj_cqrs.replica.mixins import ReplicaMeta

__all__ = ["MasterMeta", "ReplicaMeta"]
