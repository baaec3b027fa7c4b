"""Standard Webhooks signing, checked against the spec's reference package (``standardwebhooks``)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from aijobs.webhooks.signing import SecretRing, new_secret, signature, signed_headers


def test_a_secret_is_whsec_and_24_random_bytes() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 24
    assert new_secret() != secret


def test_signature_matches_the_reference_implementation() -> None:
    secret = new_secret()
    body = b'{"type":"job.succeeded","data":{"id":"job_1"}}'
    ours = signature(secret, "msg_abc", 1_700_000_000, body)
    theirs = Webhook(secret).sign("msg_abc", datetime.fromtimestamp(1_700_000_000, UTC), body.decode())
    assert ours == theirs


def test_headers_verify_and_tampering_does_not() -> None:
    secret = new_secret()
    now = int(datetime.now(UTC).timestamp())
    body = b'{"a":1}'
    headers = signed_headers("msg_x", now, body, [secret])
    assert Webhook(secret).verify(body, headers) == {"a": 1}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(b'{"a":2}', headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, {**headers, "webhook-id": "msg_y"})


def test_a_rotated_ring_signs_with_both_until_the_overlap_ends() -> None:
    old, new = new_secret(), new_secret()
    ring = SecretRing(old).rotated(new, now=1000.0, overlap_s=86400)
    assert ring.active(1000.0 + 86399) == [new, old]
    assert ring.active(1000.0 + 86400) == [new]
    assert SecretRing(old).rotated(new, now=1000.0, overlap_s=0).active(1000.0) == [new]
    again = SecretRing.from_fields({k.encode(): v.encode() for k, v in ring.fields().items()})
    assert again == ring
