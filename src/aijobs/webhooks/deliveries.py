"""Delivery records: one per (event, destination), with every attempt made for it.

A delivery's id is its ``webhook-id`` (``msg_…``): the same on every retry and replay, and derived
from the event and destination, so a fan-out that runs twice makes no second delivery. States:

- ``pending``    an attempt is scheduled (``next_at``)
- ``delivered``  a 2xx came back
- ``dead``       the last scheduled attempt failed: dead-lettered (listed per tenant)
- ``disabled``   the destination is gone (410, deleted or disabled endpoint): no more attempts

Recording an attempt and scheduling the next one (a new arq job, due after the backoff) is one
script, so a crash between the two cannot lose the delivery.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.asyncio import Redis

from aijobs.jobs import iso
from aijobs.keys import Keys
from aijobs.queue import Delivery as ArqDelivery
from aijobs.scriptbatch import ScriptBatcher

STATES = ("pending", "delivered", "dead", "disabled")

# KEYS: delivery, job index, arq job key, queue   ARGV: id, created ms, ttl, arq id, payload, score,
#       arq expiry ms, field/value pairs…
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 8))
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[3])
if redis.call('SET', KEYS[3], ARGV[5], 'PX', ARGV[7], 'NX') then
  redis.call('ZADD', KEYS[4], ARGV[6], ARGV[4])
end
return 1
"""

# KEYS: delivery, attempts, dead letters, stats [, arq job key, queue]
# ARGV: id, attempt json, state ('' = keep), next_at, tries, ttl, stat field, now
#       [, arq id, payload, score, arq expiry ms]
_RECORD = """
local current = redis.call('HGET', KEYS[1], 'state')
if not current then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[6])
redis.call('HINCRBY', KEYS[4], ARGV[7], 1)
if ARGV[3] == '' or (current == 'delivered' and ARGV[3] ~= 'delivered') then return 1 end
redis.call('HSET', KEYS[1], 'state', ARGV[3], 'next_at', ARGV[4], 'tries', ARGV[5])
if ARGV[3] == 'dead' then
  redis.call('ZADD', KEYS[3], ARGV[8], ARGV[1])
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[8] - ARGV[6])
  redis.call('EXPIRE', KEYS[3], ARGV[6])
elseif ARGV[3] == 'delivered' then
  redis.call('ZREM', KEYS[3], ARGV[1])
end
if KEYS[5] and redis.call('SET', KEYS[5], ARGV[10], 'PX', ARGV[12], 'NX') then
  redis.call('ZADD', KEYS[6], ARGV[11], ARGV[9])
end
return 1
"""


def delivery_ttl_s(schedule_s: Sequence[float], job_ttl_s: int) -> int:
    """Deliveries outlive their whole schedule by a day, and are kept at least as long as jobs."""
    return max(job_ttl_s, int(sum(schedule_s)) + 86400)


def delivery_id(job_id: str, event_id: str, destination: str) -> str:
    """``msg_`` + 26 base32 chars of a hash of what makes a delivery unique."""
    digest = hashlib.sha256(f"{job_id}|{event_id}|{destination}".encode()).digest()
    return "msg_" + base64.b32encode(digest).decode()[:26].lower()


def is_delivery_id(text: str) -> bool:
    return len(text) == 30 and text.startswith("msg_") and text[4:].isalnum()


@dataclass(slots=True)
class WebhookDelivery:
    """One event for one destination. ``endpoint_id`` is ``None`` for the job's own webhook."""

    id: str
    tenant: str
    job_id: str
    event_id: str
    event_type: str
    endpoint_id: str | None
    url: str
    created_at: float
    state: str = "pending"
    tries: int = 0
    next_at: float | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)

    def fields(self) -> dict[str, Any]:
        return {
            "id": self.id, "tenant": self.tenant, "job_id": self.job_id, "event_id": self.event_id,
            "event_type": self.event_type, "endpoint_id": self.endpoint_id or "", "url": self.url,
            "created_at": repr(self.created_at), "state": self.state, "tries": self.tries,
            "next_at": repr(self.next_at or 0.0),
        }  # fmt: skip

    def view(self) -> dict[str, Any]:
        """As the job's owner sees it (``GET /v1/jobs/{id}/deliveries``)."""
        return {
            "id": self.id,
            "object": "webhook_delivery",
            "job_id": self.job_id,
            "event_type": self.event_type,
            "event_id": self.event_id,
            "endpoint_id": self.endpoint_id,
            "url": self.url,
            "state": self.state,
            "created_at": iso(self.created_at),
            "next_attempt_at": iso(self.next_at) if self.state == "pending" else None,
            "attempts": [{**a, "at": iso(a["at"])} for a in self.attempts],
        }


def _decode(raw: dict[bytes, bytes], attempts: list[bytes]) -> WebhookDelivery:
    text = {k.decode(): v.decode() for k, v in raw.items()}
    return WebhookDelivery(
        id=text["id"],
        tenant=text["tenant"],
        job_id=text["job_id"],
        event_id=text["event_id"],
        event_type=text["event_type"],
        endpoint_id=text["endpoint_id"] or None,
        url=text["url"],
        created_at=float(text["created_at"]),
        state=text["state"],
        tries=int(text["tries"]),
        next_at=float(text["next_at"]) or None,
        attempts=[orjson.loads(a) for a in attempts],
    )


class Deliveries:
    """Delivery records in Redis; each kept ``ttl_s`` (longer than the whole retry schedule)."""

    def __init__(self, redis: Redis, ttl_s: int) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self._create = ScriptBatcher(redis, redis.register_script(_CREATE))
        self._record = ScriptBatcher(redis, redis.register_script(_RECORD))

    async def create(self, delivery: WebhookDelivery, first: ArqDelivery) -> bool:
        """Store ``delivery`` and enqueue its first attempt; ``False`` if it already existed."""
        keys = [
            Keys.delivery(delivery.id),
            Keys.job_deliveries(delivery.job_id),
            first.job_key,
            first.queue_key,
        ]
        args: list[Any] = [delivery.id, int(delivery.created_at * 1000), self.ttl_s, first.arq_id]
        args += [first.payload, first.score_ms, first.expires_ms]
        for name, value in delivery.fields().items():
            args += [name, value]
        return bool(await self._create(keys, args))

    async def record(
        self,
        delivery: WebhookDelivery,
        attempt: dict[str, Any],
        state: str | None,
        next_send: ArqDelivery | None = None,
        next_at: float | None = None,
    ) -> None:
        """Append ``attempt``; move to ``state`` (``None``: leave it) and schedule ``next_send``.

        A delivery already ``delivered`` stays so, whatever a concurrent attempt reports.
        """
        outcome = "delivered" if state == "delivered" else (state or "replayed")
        keys = [Keys.delivery(delivery.id), Keys.delivery_attempts(delivery.id)]
        keys += [Keys.dead_letters(delivery.tenant), Keys.webhook_stats()]
        args: list[Any] = [delivery.id, orjson.dumps(attempt), state or "", repr(next_at or 0.0)]
        args += [
            delivery.tries,
            self.ttl_s,
            f"{outcome}:{attempt.get('status_code') or 'error'}",
            time.time(),
        ]
        if next_send is not None:
            keys += [next_send.job_key, next_send.queue_key]
            args += [next_send.arq_id, next_send.payload, next_send.score_ms, next_send.expires_ms]
        await self._record(keys, args)

    async def head(self, delivery_id: str) -> WebhookDelivery | None:
        """The delivery without its attempts (what sending needs), in one read."""
        raw: dict[bytes, bytes] = await self.redis.hgetall(Keys.delivery(delivery_id))  # type: ignore[misc]
        return _decode(raw, []) if raw else None

    async def get(self, delivery_id: str, tenant: str | None = None) -> WebhookDelivery | None:
        found = await self._many([delivery_id])
        if not found or (tenant is not None and found[0].tenant != tenant):
            return None
        return found[0]

    async def for_job(self, job_id: str) -> list[WebhookDelivery]:
        """A job's deliveries, oldest first."""
        ids = [m.decode() for m in await self.redis.zrange(Keys.job_deliveries(job_id), 0, -1)]
        return await self._many(ids)

    async def dead_letters(self, tenant: str, limit: int) -> list[WebhookDelivery]:
        """The tenant's dead-lettered deliveries, newest first."""
        ids = [m.decode() for m in await self.redis.zrevrange(Keys.dead_letters(tenant), 0, limit - 1)]
        return [d for d in await self._many(ids) if d.state == "dead"]

    async def _many(self, ids: list[str]) -> list[WebhookDelivery]:
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for delivery_id in ids:
                pipe.hgetall(Keys.delivery(delivery_id))
                pipe.lrange(Keys.delivery_attempts(delivery_id), 0, -1)
            replies = await pipe.execute()
        pairs = zip(replies[::2], replies[1::2], strict=True)
        return [_decode(raw, attempts) for raw, attempts in pairs if raw]
