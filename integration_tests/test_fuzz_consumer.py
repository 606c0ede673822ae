"""Property-based test: arbitrary bodies, headers and routing keys, fed to a running consumer
(``cqrs_consume`` subprocess on RabbitMQ + PostgreSQL) and interleaved with valid messages.

Property, for every generated example: the worker never dies, every valid message is applied
exactly once, and every invalid one ends up in the dead-letter queue exactly once, with a reason
among the ones its kind of damage allows. The number of messages tried is printed at the end.

Hostile values are among the damage: a lone UTF-16 surrogate escape in any string (dead-lettered
at once, ``invalid_json``) and ``NaN``/``Infinity``/``-Infinity`` where a number cannot be one
(retried with the body as it came, then ``max_retries``); valid messages carry them where
django-cqrs peers do (``meta``, ``previous_data``) and are applied. ``IT_FUZZ_EXAMPLES`` sets the
number of examples (150; 400 under ``CI=true``).
"""

from __future__ import annotations

import itertools
import json
import os
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from integration_tests.failure_helpers import Rabbit, body, fault_service, iso_in, wait_for
from integration_tests.harness import in_ci, log_text, stop_process

EXAMPLES = int(os.environ.get("IT_FUZZ_EXAMPLES") or (400 if in_ci() else 150))
MAX_BYTES = 4096
REQUIRED = ("signal_type", "cqrs_id", "instance_data", "instance_pk")

_ids = itertools.count(1)
_pks = itertools.count(10**9)

scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=10)
non_dicts = values.filter(lambda v: not isinstance(v, dict))
truthy_non_ints = (
    st.integers(max_value=-1)
    | st.text(min_size=1, max_size=10)
    | st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: f != 0)
    | st.lists(scalars, min_size=1, max_size=3)
    | st.just(True)
)
header_values = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=30)
header_keys = st.text(min_size=1, max_size=20) | st.sampled_from(["x-cqrs-routing-key", "x-cqrs-retries", "x-cqrs-first-failure", "x-death", "x-cqrs-not-before", "x-cqrs-reason"])
headers = st.dictionaries(header_keys, header_values, max_size=5)
routing_keys = st.text(max_size=40).filter(lambda s: len(s.encode("utf-8")) < 250) | st.just("it_fault")


#: ``json.dumps`` (the test's encoder) writes these as ``NaN``, ``Infinity``, ``-Infinity`` and
#: escapes a surrogate as ``\\udXXX``, as django-cqrs (ujson) does. Hypothesis's text never holds a
#: surrogate, so the one put between two texts stays lone.
non_finite = st.sampled_from([float("nan"), float("inf"), float("-inf")])
lone_surrogates = st.tuples(st.text(max_size=5), st.integers(0xD800, 0xDFFF).map(chr), st.text(max_size=5)).map("".join)


def _instance(message, **changes):
    return dict(message, instance_data=dict(message["instance_data"], **changes))


def _with_surrogate(place):
    return lone_surrogates.map(lambda text: (place(template(next(_pks)), text), {"invalid_json"}))


def _not_a_datetime(text):
    from django.utils.dateparse import parse_datetime

    try:
        return parse_datetime(text) is None
    except ValueError:
        return True


def template(pk, **data):
    return body("it_fault", pk, data={"name": f"n{pk}", "mode": "ok", **data})


def _bad(key, strategy, reason):
    return strategy.map(lambda value: (dict(template(next(_pks)), **{key: value}), {reason}))


@st.composite
def raw_bytes(draw):
    raw = draw(st.binary(max_size=200))
    try:
        decoded = json.loads(raw)
    except Exception:  # noqa: BLE001
        decoded = None
    if isinstance(decoded, dict):
        raw = b"!" + raw  # never a JSON object
    return raw, {"invalid_json", "not_an_object"}


@st.composite
def missing_key(draw):
    message = template(next(_pks))
    extra = draw(st.dictionaries(st.text(max_size=8).map(lambda k: f"x_{k}"), values, max_size=3))
    message.update(extra)
    for key in draw(st.sets(st.sampled_from(REQUIRED), min_size=1)):
        del message[key]
    return message, {"missing_keys"}


invalid = st.one_of(
    raw_bytes(),
    non_dicts.map(lambda v: (v, {"not_an_object"})),
    missing_key(),
    _bad("signal_type", st.text(max_size=10).filter(lambda s: s not in ("SAVE", "DELETE", "SYNC")) | st.integers() | st.none() | st.lists(scalars, max_size=2), "bad_signal_type"),
    _bad("cqrs_id", st.integers() | st.none() | st.just("") | st.lists(scalars, max_size=2), "bad_cqrs_id"),
    _bad("cqrs_id", st.text(min_size=1, max_size=20).filter(lambda s: s != "it_fault"), "unknown_cqrs_id"),
    _bad("instance_data", non_dicts, "bad_instance_data"),
    _bad("instance_pk", st.lists(scalars, max_size=2) | st.dictionaries(st.text(max_size=4), scalars, max_size=2), "bad_instance_pk"),
    _bad("previous_data", non_dicts.filter(lambda v: v is not None), "bad_previous_data"),
    _bad("meta", non_dicts.filter(lambda v: v is not None), "bad_meta"),
    _bad("retries", truthy_non_ints, "bad_retries"),
    _bad("correlation_id", st.lists(scalars, max_size=2) | st.floats(allow_nan=False) | st.dictionaries(st.text(max_size=3), scalars, max_size=2), "bad_correlation_id"),
    st.text(max_size=30).filter(_not_a_datetime).map(lambda s: (dict(template(next(_pks)), expires=s), {"bad_expires"})),
    st.integers(1, 10**8).map(lambda s: (template(next(_pks)) | {"expires": iso_in(-s)}, {"expired"})),
    st.just(None).map(lambda _: (dict(template(next(_pks)), instance_data={"id": 1, "name": "x", "mode": "ok"}), {"missing_cqrs_fields"})),
    st.just(None).map(lambda _: ({**template(next(_pks)), "instance_data": {"cqrs_revision": 0, "cqrs_updated": "2026-11-22 08:00:00+00:00", "name": "x"}}, {"missing_pk"})),
    st.text(min_size=51, max_size=200).filter(lambda s: len(s.encode()) < 1000).map(lambda name: (template(next(_pks), name=name), {"max_retries"})),  # DataError
    st.just(None).map(lambda _: (template(next(_pks), mode="create_raises"), {"max_retries"})),
    st.integers(MAX_BYTES, 3 * MAX_BYTES).map(lambda n: (template(next(_pks), name="x" * n), {"too_large"})),
    st.integers(1000, 3000).map(lambda n: (b"[" * n, {"invalid_json"})),
    _with_surrogate(lambda m, text: _instance(m, name=text)),
    _with_surrogate(lambda m, text: _instance(m, **{text: 1})),
    _with_surrogate(lambda m, text: dict(m, previous_data={"name": text})),
    _with_surrogate(lambda m, text: dict(m, meta={"note": [1, {"deep": text}]})),
    _with_surrogate(lambda m, text: dict(m, meta={text: None})),
    _with_surrogate(lambda m, text: dict(m, correlation_id=text)),
    non_finite.map(lambda n: (_instance(template(next(_pks)), id=n), {"max_retries"})),
    non_finite.map(lambda n: (_instance(template(next(_pks)), cqrs_revision=n), {"missing_cqrs_fields"})),
)
#: What valid messages may carry besides: NaN and the infinities where django-cqrs peers apply them.
good_extras = st.none() | st.fixed_dictionaries({"meta": st.dictionaries(st.text(max_size=5), non_finite, max_size=2)}) | non_finite.map(
    lambda n: {"previous_data": {"name": n}}
)


@pytest.fixture
def fuzz_service(rabbitmq, postgres):
    with fault_service(
        IT_CQRS_MAX_RETRIES="1", IT_CQRS_RETRY_DELAY="0", IT_MAX_MESSAGE_BYTES=str(MAX_BYTES), IT_BATCH_SIZE="20"
    ) as faults:
        yield faults


def test_fuzzed_messages_never_kill_the_worker(fuzz_service):
    faults = fuzz_service
    process = faults.start()
    client = Rabbit()
    stats = {"examples": 0, "invalid": 0, "valid": 0}
    letters: dict[str, dict] = {}
    try:
        wait_for(lambda: client.consuming(faults.queue), 30, message="consumer attached")
        # Deliver any routing key to the replica queue, as a misbehaving peer could.
        client.channel.queue_bind(faults.queue, faults.exchange, routing_key="#")

        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(
            bad=st.lists(st.tuples(invalid, headers, routing_keys), min_size=1, max_size=4),
            good=st.lists(st.tuples(headers, routing_keys, good_extras), min_size=1, max_size=3),
            order=st.randoms(use_true_random=False),
        )
        def example(bad, good, order):
            plan = []
            for (payload, reasons), extra, rk in bad:
                plan.append((f"bad-{next(_ids)}", payload, reasons, extra, rk))
            valid_pks = []
            for extra, rk, values_ in good:
                pk = next(_ids)
                valid_pks.append(pk)
                plan.append((f"good-{pk}", dict(template(pk), **(values_ or {})), None, extra, rk))
            order.shuffle(plan)
            for test_id, payload, _reasons, extra, rk in plan:
                client.publish(faults.exchange, rk, payload, headers={**extra, "x-test-id": test_id})
            expected_bad = {test_id: reasons for test_id, _p, reasons, _e, _rk in plan if reasons is not None}

            def settled():
                for _, properties, _raw in client.drain(faults.dlq):
                    letters[properties.headers["x-test-id"]] = properties.headers
                applied = faults.applied()
                return all(t in letters for t in expected_bad) and all(pk in applied for pk in valid_pks)

            wait_for(settled, 30, interval=0.02, message="example settled")
            applied = faults.applied()
            assert all(applied[pk] == 1 for pk in valid_pks)
            for test_id, reasons in expected_bad.items():
                headers_ = letters[test_id]
                assert headers_["x-cqrs-reason"] in reasons, (test_id, reasons, headers_)
                assert headers_["x-cqrs-error"]
            assert not any(t.startswith("good-") for t in letters)
            assert process.poll() is None
            stats["examples"] += 1
            stats["invalid"] += len(expected_bad)
            stats["valid"] += len(valid_pks)

        example()
        time.sleep(0.5)
        # Nothing left behind, nothing dead-lettered twice, and the worker is the first one.
        assert client.count(faults.queue) == 0
        assert client.drain(faults.dlq) == []
        assert len(letters) == stats["invalid"]
        assert len(faults.applied()) == stats["valid"]
        assert process.poll() is None
    finally:
        client.close()
        stop_process(process)
    log = log_text(process)
    assert "exited with code" not in log, log[-3000:]
    assert "handling failed unexpectedly" not in log, log[-3000:]
    total = stats["invalid"] + stats["valid"]
    print(
        f"\nfuzz: {stats['examples']} examples, {total} messages tried"
        f" ({stats['invalid']} invalid, all dead-lettered with a reason; {stats['valid']} valid, all applied once)"
    )
