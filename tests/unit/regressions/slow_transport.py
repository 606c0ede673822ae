from __future__ import annotations

import threading
import time

from dj_cqrs.transport.base import BaseTransport


class SlowTransport(BaseTransport):
    """A broker that confirms after ``delay`` seconds, or fails after it (``fail``)."""

    background_publish = True
    supports_confirms = True
    delay = 0.0
    fail = False
    sent: list = []
    lock = threading.Lock()

    def produce(self, payload):
        self.produce_many([payload])

    def produce_many(self, payloads):
        payloads = list(payloads)
        time.sleep(type(self).delay)
        if type(self).fail:
            raise ConnectionError("broker unreachable")
        with type(self).lock:
            type(self).sent.extend(payloads)

    def consume(self, *args, **kwargs):
        raise RuntimeError("not a consumer")
