"""A tenant's registered webhook endpoints, and the secret that signs its jobs' own webhooks.

An endpoint (``wh_…``) receives the events it subscribes to for every job of its tenant. Its signing
secret is returned once, when it is created or rotated; afterwards it only signs. A job's own
``webhook: {url, events}`` is signed with the tenant's job-webhook secret (``POST
/v1/webhooks/secret`` creates or rotates it), so a receiver verifies both kinds the same way.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, replace
from typing import Any

import orjson
from redis.asyncio import Redis

from aijobs.jobs import iso
from aijobs.keys import Keys
from aijobs.webhooks.signing import SecretRing, new_secret


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A registered endpoint as stored (``ring`` holds its secrets: never shown after creation)."""

    id: str
    tenant: str
    url: str
    events: tuple[str, ...]
    description: str
    created_at: float
    ring: SecretRing
    disabled_at: float | None = None
    disabled_reason: str | None = None

    def wants(self, event_type: str) -> bool:
        return self.disabled_at is None and event_type in self.events

    def view(self) -> dict[str, Any]:
        """The endpoint as its owner sees it: everything but the secrets."""
        return {
            "id": self.id,
            "object": "webhook_endpoint",
            "url": self.url,
            "events": list(self.events),
            "description": self.description,
            "created_at": iso(self.created_at),
            "enabled": self.disabled_at is None,
            "disabled_at": iso(self.disabled_at),
            "disabled_reason": self.disabled_reason,
            "previous_secret_valid_until": iso(self.ring.previous_until) if self.ring.previous else None,
        }


def decode_endpoint(raw: dict[bytes, bytes]) -> Endpoint:
    """An endpoint from its hash (HGETALL)."""
    disabled_at = raw.get(b"disabled_at")
    return Endpoint(
        id=raw[b"id"].decode(),
        tenant=raw[b"tenant"].decode(),
        url=raw[b"url"].decode(),
        events=tuple(orjson.loads(raw[b"events"])),
        description=raw.get(b"description", b"").decode(),
        created_at=float(raw[b"created_at"]),
        ring=SecretRing.from_fields(raw),
        disabled_at=float(disabled_at) if disabled_at else None,
        disabled_reason=raw.get(b"disabled_reason", b"").decode() or None,
    )


# KEYS: endpoint   ARGV: field/value pairs.  Only an endpoint that still exists is changed: a DELETE
# racing a rotation or a 410 must not leave a headless hash behind.
_SET_IF_EXISTS = """
if redis.call('HEXISTS', KEYS[1], 'id') == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""


class TooManyEndpoints(Exception):
    """The tenant already has as many endpoints as allowed."""


class Endpoints:
    """Endpoints and job-webhook secrets in Redis."""

    def __init__(self, redis: Redis, max_per_tenant: int, overlap_s: float) -> None:
        self.redis = redis
        self._set_if_exists = redis.register_script(_SET_IF_EXISTS)
        self.max_per_tenant = max_per_tenant
        self.overlap_s = overlap_s
        #: Tenants known to have a job-webhook secret: one is never removed, so this never goes stale.
        self._with_job_secret: set[str] = set()

    async def create(
        self, tenant: str, url: str, events: list[str], description: str
    ) -> tuple[Endpoint, str]:
        """A new endpoint and its secret (the only time the secret is returned)."""
        ids = Keys.tenant_endpoints(tenant)
        if await self.redis.scard(ids) >= self.max_per_tenant:  # type: ignore[misc]
            raise TooManyEndpoints(f"a tenant can have at most {self.max_per_tenant} webhook endpoints")
        secret = new_secret()
        endpoint = Endpoint(
            "wh_" + secrets.token_hex(12),
            tenant,
            url,
            tuple(events),
            description,
            time.time(),
            SecretRing(secret),
        )
        fields = {
            "id": endpoint.id, "tenant": tenant, "url": url, "events": orjson.dumps(events),
            "description": description, "created_at": repr(endpoint.created_at), **endpoint.ring.fields(),
        }  # fmt: skip
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(Keys.endpoint(endpoint.id), mapping=fields)
            pipe.sadd(ids, endpoint.id)
            await pipe.execute()
        return endpoint, secret

    async def get(self, endpoint_id: str, tenant: str | None = None) -> Endpoint | None:
        """The endpoint, or ``None`` when missing or (with ``tenant``) someone else's."""
        raw: dict[bytes, bytes] = await self.redis.hgetall(Keys.endpoint(endpoint_id))  # type: ignore[misc]
        if b"id" not in raw:
            return None
        endpoint = decode_endpoint(raw)
        return endpoint if tenant is None or endpoint.tenant == tenant else None

    async def for_tenant(self, tenant: str) -> list[Endpoint]:
        """The tenant's endpoints, oldest first."""
        ids = sorted(m.decode() for m in await self.redis.smembers(Keys.tenant_endpoints(tenant)))  # type: ignore[misc]
        async with self.redis.pipeline(transaction=False) as pipe:
            for endpoint_id in ids:
                pipe.hgetall(Keys.endpoint(endpoint_id))
            raws = await pipe.execute()
        return sorted((decode_endpoint(raw) for raw in raws if b"id" in raw), key=lambda e: e.created_at)

    async def delete(self, endpoint: Endpoint) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(Keys.endpoint(endpoint.id))
            pipe.srem(Keys.tenant_endpoints(endpoint.tenant), endpoint.id)
            await pipe.execute()

    async def rotate(self, endpoint: Endpoint) -> tuple[Endpoint, str]:
        """A new secret for ``endpoint``; the old one keeps signing for the overlap."""
        secret = new_secret()
        ring = endpoint.ring.rotated(secret, time.time(), self.overlap_s)
        await self._update(endpoint.id, ring.fields())
        return replace(endpoint, ring=ring), secret

    async def disable(self, endpoint_id: str, reason: str) -> None:
        """Stop sending to an endpoint (it answered 410 Gone); only if it still exists."""
        await self._update(endpoint_id, {"disabled_at": repr(time.time()), "disabled_reason": reason})

    async def _update(self, endpoint_id: str, fields: dict[str, str]) -> None:
        args = [item for pair in fields.items() for item in pair]
        await self._set_if_exists(keys=[Keys.endpoint(endpoint_id)], args=args)

    async def enable(self, endpoint: Endpoint) -> Endpoint:
        await self.redis.hdel(Keys.endpoint(endpoint.id), "disabled_at", "disabled_reason")  # type: ignore[misc]
        return (await self.get(endpoint.id)) or endpoint

    async def has_job_secret(self, tenant: str) -> bool:
        """Whether ``tenant`` can sign job webhooks (checked on every submit with a webhook)."""
        if tenant not in self._with_job_secret and await self.redis.exists(Keys.webhook_secret(tenant)):
            self._with_job_secret.add(tenant)
        return tenant in self._with_job_secret

    async def job_ring(self, tenant: str) -> SecretRing | None:
        """The secrets signing ``tenant``'s per-job webhooks, or ``None`` before the first is made."""
        raw: dict[bytes, bytes] = await self.redis.hgetall(Keys.webhook_secret(tenant))  # type: ignore[misc]
        return SecretRing.from_fields(raw) if raw else None

    async def rotate_job_secret(self, tenant: str) -> tuple[SecretRing, str]:
        """Create the tenant's job-webhook secret, or replace it (the old one signs for the overlap)."""
        secret = new_secret()
        ring = await self.job_ring(tenant)
        ring = ring.rotated(secret, time.time(), self.overlap_s) if ring else SecretRing(secret)
        await self.redis.hset(Keys.webhook_secret(tenant), mapping=ring.fields())  # type: ignore[misc]
        return ring, secret
