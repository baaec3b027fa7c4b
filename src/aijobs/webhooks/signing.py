"""Signing per the Standard Webhooks spec (https://www.standardwebhooks.com).

A secret is ``whsec_`` + base64 of 24 random bytes; the key is the decoded bytes. Each attempt is
signed anew (its ``webhook-timestamp`` is the attempt's time, so receivers' 5-minute tolerance holds
on a retry hours later) over ``{webhook-id}.{webhook-timestamp}.{body}``: ``v1,`` + base64
HMAC-SHA256. While a rotated-out secret is still valid, both signatures are sent, space-separated.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

SECRET_PREFIX = "whsec_"  # noqa: S105 (the spec's marker, not a secret)
SECRET_BYTES = 24


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def signature(secret: str, msg_id: str, timestamp_s: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256>`` of ``msg_id.timestamp.body`` under ``secret``."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    digest = hmac.new(key, f"{msg_id}.{timestamp_s}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(msg_id: str, timestamp_s: int, body: bytes, keys: Sequence[str]) -> dict[str, str]:
    """The three ``webhook-*`` headers, one signature per secret in ``keys`` (newest first)."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp_s),
        "webhook-signature": " ".join(signature(key, msg_id, timestamp_s, body) for key in keys),
    }


@dataclass(frozen=True, slots=True)
class SecretRing:
    """The current secret and, for a while after a rotation, the one it replaced."""

    current: str
    previous: str | None = None
    previous_until: float | None = None

    def active(self, now: float) -> list[str]:
        """The secrets that sign now, newest first."""
        if self.previous and self.previous_until and now < self.previous_until:
            return [self.current, self.previous]
        return [self.current]

    def rotated(self, new: str, now: float, overlap_s: float) -> SecretRing:
        """``new`` becomes current; the current one keeps signing for ``overlap_s``."""
        return SecretRing(new, self.current, now + overlap_s) if overlap_s > 0 else SecretRing(new)

    def fields(self) -> dict[str, str]:
        """As hash fields (``previous`` empty when none)."""
        return {
            "secret": self.current,
            "previous_secret": self.previous or "",
            "previous_until": repr(self.previous_until or 0.0),
        }

    @classmethod
    def from_fields(cls, raw: dict[bytes, bytes]) -> SecretRing:
        previous = raw.get(b"previous_secret", b"").decode() or None
        until = float(raw.get(b"previous_until", b"0") or 0) or None
        return cls(raw[b"secret"].decode(), previous, until)
