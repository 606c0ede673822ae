"""dj_cqrs.webhooks.sign / verify: the signature scheme receivers rely on."""

from __future__ import annotations

import hashlib
import hmac
import subprocess
import sys

import pytest

from dj_cqrs.webhooks import SignatureError, sign, verify

BODY = b'{"signal_type":"SAVE","cqrs_id":"product","instance_data":{"id":1}}'


def test_signature_is_hmac_sha256_of_timestamp_dot_body():
    headers = sign(BODY, "s3cret", "ev-1", timestamp=1700000000)
    expected = hmac.new(b"s3cret", b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert headers == {
        "X-CQRS-Timestamp": "1700000000",
        "X-CQRS-Signature": f"sha256={expected}",
        "X-CQRS-Event-Id": "ev-1",
    }


def test_a_genuine_request_verifies_with_headers_in_any_case():
    headers = sign(BODY, "s3cret", "ev-1")
    assert verify(BODY, headers, "s3cret") is True
    assert verify(BODY.decode(), {k.lower(): v for k, v in headers.items()}, "s3cret") is True
    assert verify(BODY, list(headers.items()), "s3cret") is True
    # Django's request.META spelling
    meta = {"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()}
    assert verify(BODY, meta, "s3cret") is True


def test_tampered_body_is_rejected():
    headers = sign(BODY, "s3cret")
    with pytest.raises(SignatureError, match="signature mismatch"):
        verify(BODY.replace(b"1", b"2"), headers, "s3cret")


def test_wrong_secret_is_rejected_and_a_rotated_list_accepted():
    headers = sign(BODY, "new")
    with pytest.raises(SignatureError, match="signature mismatch"):
        verify(BODY, headers, "old")
    assert verify(BODY, headers, ["old", "new"]) is True
    with pytest.raises(SignatureError, match="no secret"):
        verify(BODY, headers, [])


def test_stale_and_future_timestamps_are_rejected():
    old = sign(BODY, "s", timestamp=1000)
    with pytest.raises(SignatureError, match="stale timestamp"):
        verify(BODY, old, "s", now=1000 + 301)
    assert verify(BODY, old, "s", now=1000 + 299)
    assert verify(BODY, old, "s", max_age=None)
    with pytest.raises(SignatureError, match="future"):
        verify(BODY, old, "s", now=1000 - 400)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing X-CQRS-Signature"),
        ({"X-CQRS-Signature": "sha256=00"}, "missing X-CQRS-Timestamp"),
        ({"X-CQRS-Signature": "sha256=00", "X-CQRS-Timestamp": "soon"}, "malformed"),
        (
            {"X-CQRS-Signature": "md5=00", "X-CQRS-Timestamp": "1000"},
            "unsupported signature scheme",
        ),
    ],
)
def test_malformed_headers_say_why(headers, reason):
    with pytest.raises(SignatureError, match=reason) as info:
        verify(BODY, headers, "s", now=1000)
    assert isinstance(info.value, ValueError) and reason in info.value.reason


def test_verify_needs_neither_django_settings_nor_models():
    code = (
        "import sys\n"
        "from dj_cqrs.webhooks import sign, verify\n"
        "assert verify(b'x', sign(b'x', 'k'), 'k')\n"
        "assert not [m for m in sys.modules if m == 'django' or m.startswith('django.')], 'django imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={"PATH": "/usr/bin:/bin"})
