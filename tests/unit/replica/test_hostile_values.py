"""NaN, the infinities and lone surrogates, anywhere in a body: each message is settled on its own.

* A string with a lone UTF-16 surrogate (``"\\ud800"``, ``"\\udc00"``) is not Unicode text: it can
  neither be stored nor encoded again as UTF-8, so the message is dead-lettered at once
  (``invalid_json``), wherever the string is (a value, a key, ``previous_data``, ``meta``).
* ``NaN``/``Infinity``/``-Infinity`` are what django-cqrs (ujson) writes for such float values, so
  they are read; where they cannot apply (a primary key) the message fails like any bad value
  and is retried with the value as it came (the retry body is encoded again), then
  dead-lettered; where they can (``meta``, ``previous_data``, a float column) it is applied.
* Whatever a message holds, the rest of its batch goes on and nothing raises out of the consume
  loop; a successor that cannot be built dead-letters the original bytes (``internal_error``).
"""

from __future__ import annotations

import datetime
import io
import itertools
import json
import math
from collections.abc import Iterator

import pytest
from django.core.management import call_command
from django.utils import timezone

from dj_cqrs import encoding
from dj_cqrs.core import names, settlement
from dj_cqrs.core.dead_letter_store import DeadLetter
from dj_cqrs.core.messages import Action, InboundMessage
from dj_cqrs.exceptions import PayloadError
from dj_cqrs.replica import dead_letters
from dj_cqrs.replica.consumer import handle
from dj_cqrs.transport import memory
from dj_cqrs.transport.memory import StoredMessage
from tests.apps.replica_app.models import BasicFieldsModelRef, SimplestModelRef
from tests.unit.conftest import cqrs_settings_and_transport
from tests.unit.replica.helpers import UPDATED

pytestmark = pytest.mark.django_db(transaction=True)

NUMBERS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}
SURROGATES = {"high": "\ud800", "low": "\udc00", "high-at-end": "ok \udbff", "low-first": "\udfff ok"}


def raw(pk: int, *, name: object = "ok", pk_value: object = None, previous: object = None, meta: object = None) -> bytes:
    """A django-cqrs body as its master (ujson: ASCII, NaN as ``NaN``) would write it."""
    data = {
        "signal_type": "SAVE",
        "cqrs_id": "simplest",
        "instance_data": {
            "id": pk if pk_value is None else pk_value,
            "name": name,
            "cqrs_revision": 0,
            "cqrs_updated": UPDATED,
        },
        "previous_data": previous,
        "instance_pk": pk,
        "correlation_id": None,
        "retries": 0,
        "expires": (timezone.now() + datetime.timedelta(hours=1)).replace(microsecond=0).isoformat(),
        "meta": meta if meta is not None else {},
    }
    return json.dumps(data, ensure_ascii=True, allow_nan=True).encode("ascii")


def surrogate_bodies(pks: Iterator[int]) -> dict[str, bytes]:
    """A lone surrogate in a value, ``previous_data``, nested in ``meta`` and as a key; one pk each."""
    bodies = {}
    for label, text in SURROGATES.items():
        bodies[f"name-{label}"] = raw(next(pks), name=text)
        bodies[f"previous-{label}"] = raw(next(pks), previous={"name": text})
        bodies[f"meta-{label}"] = raw(next(pks), meta={"note": [1, {"deep": text}]})
        bodies[f"key-{label}"] = raw(next(pks), meta={text: 1})
    return bodies


# -- decoding ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("label", list(SURROGATES))
def test_loads_refuses_a_lone_surrogate_escaped_or_raw(label):
    text = SURROGATES[label]
    with pytest.raises(ValueError, match="lone UTF-16 surrogate"):
        encoding.loads(json.dumps({"a": [text]}).encode())
    with pytest.raises(ValueError, match="lone UTF-16 surrogate"):
        encoding.loads(json.dumps({text: 1}))
    with pytest.raises(ValueError, match="lone UTF-16 surrogate"):
        encoding.loads(json.dumps({"a": text}, ensure_ascii=False))  # a str input with the raw character


def test_loads_keeps_surrogate_pairs_and_escaped_backslashes():
    assert encoding.loads(b'{"a": "\\ud83d\\ude00", "b": "\\\\ud800"}') == {"a": "\U0001f600", "b": "\\ud800"}
    assert encoding.loads('{"a": "\U0001f600 ☕"}') == {"a": "\U0001f600 ☕"}


def test_loads_reads_nan_and_infinities_as_django_cqrs_writes_them():
    value = encoding.loads(b'{"a": NaN, "b": Infinity, "c": -Infinity}')
    assert math.isnan(value["a"]) and value["b"] == math.inf and value["c"] == -math.inf
    assert encoding.dumps(value, allow_nan=True) == '{"a":NaN,"b":Infinity,"c":-Infinity}'
    with pytest.raises(ValueError):
        encoding.dumps(value)  # what a master publishes stays RFC 8259 JSON


@pytest.mark.parametrize(("label", "body"), list(surrogate_bodies(itertools.count(1)).items()))
def test_a_lone_surrogate_anywhere_is_dead_lettered_at_once(label, body):
    outcome = handle(InboundMessage(body, routing_key="simplest"))
    assert outcome.action is Action.DEAD_LETTER
    assert outcome.reason == "invalid_json"
    assert "lone UTF-16 surrogate" in outcome.detail


# -- a batch of hostile messages among valid ones (memory transport: the real settle path) ------------


def test_hostile_messages_in_a_batch_are_settled_one_by_one():
    plan: dict[int, tuple[bytes, str]] = {}  # pk -> (body, expected: "applied" or a dead-letter reason)
    pks = itertools.count(1)
    for label, number in NUMBERS.items():
        pk = next(pks)
        plan[pk] = (raw(pk, pk_value=number), "max_retries")  # a primary key that cannot convert
        pk = next(pks)
        plan[pk] = (raw(pk, previous={"price": number}, meta={"ratio": number, "label": label}), "applied")
    for body in surrogate_bodies(pks).values():
        plan[json.loads(body)["instance_pk"]] = (body, "invalid_json")
    valid = []
    with cqrs_settings_and_transport(replica={"CQRS_MAX_RETRIES": 2, "CQRS_RETRY_DELAY": 0}) as transport:
        for index, (body, _) in enumerate(plan.values()):
            transport.send_raw(body, "simplest")
            valid.append(1000 + index)
            transport.send_raw(raw(1000 + index, name=f"valid {index}"), "simplest")
        transport.join()  # never raises

        assert set(SimplestModelRef.objects.filter(pk__gte=1000).values_list("pk", flat=True)) == set(valid)
        applied = {pk for pk, (_, expected) in plan.items() if expected == "applied"}
        assert set(SimplestModelRef.objects.filter(pk__lt=1000).values_list("pk", flat=True)) == applied
        letters = {json.loads(stored.body.decode("ascii"))["instance_pk"]: outcome for stored, outcome in transport.dead_letters}
        assert letters.keys() == {pk for pk, (_, expected) in plan.items() if expected != "applied"}
        for pk, outcome in letters.items():
            assert outcome.reason == plan[pk][1], (pk, outcome)
            assert outcome.detail
        # A dead letter is the original body, byte for byte ...
        originals = {body for body, _ in plan.values()}
        assert all(stored.body in originals for stored, outcome in transport.dead_letters if outcome.reason == "invalid_json")
        # ... and a retried one keeps its NaN/Infinity as it came.
        retried = [stored for stored, outcome in transport.dead_letters if outcome.reason == "max_retries"]
        assert {repr(json.loads(s.body)["instance_data"]["id"]) for s in retried} == {"nan", "inf", "-inf"}
        assert all(json.loads(s.body)["retries"] == 2 for s in retried)


def test_nan_and_infinities_in_a_float_column_apply():
    with cqrs_settings_and_transport() as transport:
        for pk, number in enumerate(NUMBERS.values(), start=1):
            body = json.loads(raw(pk))
            body.update(cqrs_id="basic", instance_data={"int_field": pk, "float_field": number, "cqrs_revision": 0, "cqrs_updated": UPDATED})
            transport.send_raw(json.dumps(body).encode(), "basic")
        transport.join(fail_fast=True)
    # SQLite keeps the infinities and stores NaN as NULL; PostgreSQL keeps all three.
    stored = dict(BasicFieldsModelRef.objects.values_list("int_field", "float_field"))
    assert stored[2] == math.inf and stored[3] == -math.inf
    assert stored[1] is None or math.isnan(stored[1])


def test_a_successor_that_cannot_be_built_dead_letters_the_original_and_the_batch_goes_on(monkeypatch):
    def broken(payload):
        raise ValueError("cannot encode this body again")

    monkeypatch.setattr(memory, "retry_body", broken)
    with cqrs_settings_and_transport(replica={"CQRS_MAX_RETRIES": 5, "CQRS_RETRY_DELAY": 0}) as transport:
        failing = raw(1, pk_value="not-a-number")
        transport.send_raw(failing, "simplest")
        transport.send_raw(raw(2, name="valid"), "simplest")
        transport.join()
        assert list(SimplestModelRef.objects.values_list("pk", flat=True)) == [2]
        ((stored, outcome),) = transport.dead_letters
        assert stored.body == failing
        assert outcome.action is Action.DEAD_LETTER
        assert outcome.reason == "internal_error"
        assert outcome.failure == "exception"
        assert "settling the retry outcome failed: ValueError: cannot encode this body again" in outcome.detail


def test_failure_headers_are_valid_utf8_whatever_the_error_text():
    from dj_cqrs.core.messages import Outcome

    message = InboundMessage(b"{}", routing_key="simplest")
    outcome = Outcome(Action.DEAD_LETTER, reason="exception", detail="bad value 'x\ud800y' ☕")
    headers = settlement.failure_headers(message, outcome)
    headers[names.ERROR_HEADER].encode("utf-8")  # no UnicodeEncodeError
    assert headers[names.ERROR_HEADER] == "bad value 'x\\ud800y' ☕"


# -- cqrs_dead_letters on such letters -------------------------------------------------------------------


def test_dead_letters_dump_summary_and_retry_handle_hostile_letters():
    def command(*args):
        out = io.StringIO()
        call_command("cqrs_dead_letters", *args, stdout=out, stderr=io.StringIO())
        return out.getvalue()

    with cqrs_settings_and_transport(replica={"CQRS_MAX_RETRIES": 0}) as transport:
        surrogate = raw(1, name="\ud800")
        nan_pk = raw(2, pk_value=float("nan"))
        nan_meta = raw(3, meta={"x": float("nan")})
        transport.send_raw(surrogate, "simplest")
        transport.send_raw(nan_pk, "simplest")
        transport.join()
        # A letter with NaN where it can apply: put by hand (e.g. from a django-cqrs replica).
        transport.send_raw(b"{broken", "simplest")
        transport.join()
        transport.dead_letters.append((StoredMessage("simplest", nan_meta), transport.dead_letters[-1][1]))

        dumped = command("dump", "--headers").splitlines()
        assert len(dumped) == 4
        bodies = [json.loads(line)["body"] for line in dumped]
        assert surrogate.decode() in bodies and nan_pk.decode() in bodies
        summary = command("summary").splitlines()
        assert "?\tinvalid_json\t2" in summary  # the surrogate and the broken body
        assert "simplest\tmax_retries\t1" in summary

        report = command("retry")
        assert report.startswith("Retried 2 dead letters"), report
        assert "2 malformed" in report
        assert [json.loads(m.body)["instance_pk"] for m in transport.messages] == [2, 3]
        assert "NaN" in transport.messages[0].body.decode()
        transport.join()
        assert list(SimplestModelRef.objects.values_list("pk", flat=True)) == [3]


def test_retry_message_refuses_a_letter_that_cannot_be_encoded_again():
    letter = DeadLetter(raw(1, name="\udc00"), {})
    with pytest.raises(PayloadError, match="not a JSON object") as caught:
        dead_letters.retry_message(letter, "replica")
    assert caught.value.reason == "malformed"
