"""dj_cqrs: keep read-model replicas in sync with the service that owns the data.

Nothing here touches Django settings, the database or the broker at import time.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
