"""django-cqrs import path for the model managers."""

from dj_cqrs.master.managers import MasterManager
from dj_cqrs.replica.managers import ReplicaManager

__all__ = ["MasterManager", "ReplicaManager"]
