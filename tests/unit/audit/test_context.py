"""``dj_cqrs.audit``: the context itself (nesting, merging, threads, asyncio, lazy values)."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from dj_cqrs import audit


def test_no_context_outside_any_block():
    assert audit.current() is None
    assert audit.active() is False
    meta = {"x": 1}
    assert audit.merged(meta) is meta
    assert audit.merged_or_none(None) is None


def test_nested_contexts_merge_inner_over_outer_and_restore_on_exit():
    with audit.context(user_id=1, job="import"):
        assert audit.current() == {"user_id": 1, "job": "import"}
        with audit.context(job="resize", step=2):
            assert audit.current() == {"user_id": 1, "job": "resize", "step": 2}
        assert audit.current() == {"user_id": 1, "job": "import"}
    assert audit.current() is None


def test_context_is_restored_when_the_block_raises():
    with pytest.raises(RuntimeError), audit.context(a=1):
        raise RuntimeError("boom")
    assert audit.current() is None


def test_current_returns_a_copy():
    with audit.context(a=1):
        audit.current()["a"] = 2  # type: ignore[index]
        assert audit.current() == {"a": 1}


@pytest.mark.parametrize("value", [object(), {1, 2}, b"bytes", float("nan")])
def test_values_must_be_json_serializable(value):
    with pytest.raises(TypeError, match="audit value 'bad' must be JSON-serializable"):
        with audit.context(bad=value):
            pass  # pragma: no cover


def test_merge_adds_audit_and_keeps_the_callers_own_audit_key():
    with audit.context(user_id=7):
        assert audit.merged({"x": 1}) == {"x": 1, "audit": {"user_id": 7}}
        assert audit.merged({"audit": "mine"}) == {"audit": "mine"}
        assert audit.merged_or_none(None) == {"audit": {"user_id": 7}}


def test_a_new_thread_starts_without_the_context_a_copied_one_sees_it():
    seen = {}
    with audit.context(worker="w1"):
        plain = threading.Thread(target=lambda: seen.__setitem__("plain", audit.current()))
        ctx = contextvars.copy_context()
        copied = threading.Thread(target=lambda: seen.__setitem__("copied", ctx.run(audit.current)))
        plain.start()
        copied.start()
        plain.join()
        copied.join()
    assert seen == {"plain": None, "copied": {"worker": "w1"}}


def test_threads_keep_their_own_contexts():
    barrier = threading.Barrier(2)
    seen = {}

    def work(name):
        with audit.context(worker=name):
            barrier.wait()
            seen[name] = audit.current()

    threads = [threading.Thread(target=work, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {"a": {"worker": "a"}, "b": {"worker": "b"}}


def test_asyncio_tasks_copy_the_context_they_were_created_in():
    async def main():
        async def inner(step):
            with audit.context(step=step):
                await asyncio.sleep(0)
                return audit.current()

        with audit.context(request_id="r"):
            results = await asyncio.gather(inner(1), inner(2))
            after = audit.current()
        return results, after

    results, after = asyncio.run(main())
    assert results == [{"request_id": "r", "step": 1}, {"request_id": "r", "step": 2}]
    assert after == {"request_id": "r"}


def test_lazy_values_are_resolved_once_and_only_when_asked():
    calls = []

    def lazy():
        calls.append(1)
        return {"user_id": 5}

    with audit.lazy_context({"request_id": "r"}, lazy):
        assert calls == []
        assert audit.active()
        with audit.context(step=1):
            assert audit.current() == {"user_id": 5, "request_id": "r", "step": 1}
        assert audit.current() == {"user_id": 5, "request_id": "r"}
    assert calls == [1]


def test_lazy_values_are_checked_too():
    with audit.lazy_context({}, lambda: {"user": object()}):
        with pytest.raises(TypeError, match="audit value 'user'"):
            audit.current()
