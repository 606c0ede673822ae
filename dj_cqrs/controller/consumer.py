"""django-cqrs import path: apply a received payload to its replica model."""

from dj_cqrs.replica.consumer import consume, route_signal_to_replica_model

__all__ = ["consume", "route_signal_to_replica_model"]
