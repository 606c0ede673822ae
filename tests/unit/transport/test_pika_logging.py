"""pika's connection log lines are dropped only inside ``reported_by_us`` and only in its thread."""

from __future__ import annotations

import logging
import threading

from dj_cqrs.transport import pika_logging


def test_lines_inside_the_block_are_dropped_and_others_kept(caplog):
    log = logging.getLogger("pika.adapters.utils.connection_workflow")
    with caplog.at_level(logging.DEBUG):
        log.error("outside before")
        with pika_logging.reported_by_us():
            log.error("inside")
            seen_elsewhere: list[str] = []

            def other_thread() -> None:
                log.error("other thread")
                seen_elsewhere.append("done")

            thread = threading.Thread(target=other_thread)
            thread.start()
            thread.join()
        log.error("outside after")
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("pika")]
    assert messages == ["outside before", "other thread", "outside after"]
    assert seen_elsewhere == ["done"]


def test_nesting_restores_the_outer_state(caplog):
    log = logging.getLogger("pika.adapters.blocking_connection")
    with caplog.at_level(logging.DEBUG):
        with pika_logging.reported_by_us():
            with pika_logging.reported_by_us():
                log.error("deep")
            log.error("still inside")
        log.error("after")
    assert [r.getMessage() for r in caplog.records if r.name.startswith("pika")] == ["after"]
