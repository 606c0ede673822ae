"""The broker switch of ``make demo-web`` for the server-less ``filesystem://`` broker.

``examples/demo_web.py`` "cuts the broker" by creating the file named by ``DEMO_BROKER_SWITCH``.
While it exists, every publish of this service fails as it would with the broker down
(:class:`~dj_cqrs.exceptions.PublishFailed`): the events stay in the outbox, and the relay
publishes them once the file is gone. (On RabbitMQ and Redis the demo cuts a TCP proxy instead.)
"""

from __future__ import annotations

import os
from typing import Any

from dj_cqrs.exceptions import PublishFailed
from dj_cqrs.transport import KombuTransport


def broker_cut() -> bool:
    switch = os.environ.get("DEMO_BROKER_SWITCH")
    return bool(switch) and os.path.exists(switch)


class SwitchedKombuTransport(KombuTransport):
    """``KombuTransport`` whose publishes fail while the demo's switch is off."""

    def publish_message(self, *args: Any, **kwargs: Any) -> None:
        if broker_cut():
            raise PublishFailed("the broker is cut (make demo-web's switch)")
        super().publish_message(*args, **kwargs)
