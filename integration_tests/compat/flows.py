"""Steps shared by the compatibility tests: start a replica consumer, wait for convergence."""

from __future__ import annotations

import subprocess
from typing import Any

from integration_tests.compat.wire import consumer_count
from integration_tests.harness import Service, log_text, wait_until


def start_consumer(replica: Service, queue: str, *args: str) -> subprocess.Popen[bytes]:
    """Start ``cqrs_consume`` and wait until it consumes from ``queue``.

    Messages published before a replica declared *and bound* its queue are unroutable, and a
    queue can exist before its bindings do; both packages bind before they start consuming, so a
    consumer on the queue is the signal that it is ready.
    """
    consumer = replica.start("cqrs_consume", *args)
    wait_until(lambda: consumer_count(queue) > 0 or consumer.poll() is not None, 60, message="replica consuming")
    assert consumer.poll() is None, log_text(consumer)
    return consumer


def wait_converged(replica: Service, expected: dict[str, Any], timeout: float, message: str) -> None:
    """Wait until the replica's ``it_state`` equals ``expected``; on timeout, fail with a per-row diff."""
    last: dict[str, Any] = {}

    def check() -> bool:
        last.clear()
        last.update(replica.state())
        return last == expected

    try:
        wait_until(check, timeout, message=message)
    except AssertionError:
        raise AssertionError(f"{message}: replica differs from master:\n{state_diff(expected, last)}") from None


def state_diff(master: dict[str, Any], replica: dict[str, Any]) -> str:
    lines = []
    for cqrs_id in sorted(set(master) | set(replica)):
        rows_m, rows_r = master.get(cqrs_id, {}), replica.get(cqrs_id, {})
        for pk in sorted(set(rows_m) | set(rows_r)):
            m, r = rows_m.get(pk), rows_r.get(pk)
            if m == r:
                continue
            if m is None or r is None:
                lines.append(f"{cqrs_id} {pk}: master={m!r} replica={r!r}")
                continue
            for field in sorted(set(m) | set(r)):
                if m.get(field) != r.get(field):
                    lines.append(f"{cqrs_id} {pk}.{field}: master={m.get(field)!r} replica={r.get(field)!r}")
    return "\n".join(lines)
