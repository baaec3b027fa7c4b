"""API keys: created once and shown once, stored only as a sha256 hash, each owned by a tenant."""

from __future__ import annotations

import hashlib
import re
import secrets
import time

from redis.asyncio import Redis

from aijobs.keys import Keys

TENANT_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
KEY_PREFIX = "aj_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeys:
    """Create and look up API keys. Lookups are cached for ``cache_ttl_s`` to spare a round trip."""

    def __init__(self, redis: Redis, cache_ttl_s: float = 0.0) -> None:
        self.redis = redis
        self.cache_ttl_s = cache_ttl_s
        self._cache: dict[str, tuple[float, str | None]] = {}

    async def create(self, tenant: str, name: str = "") -> str:
        """A new key for ``tenant``. The key itself is returned here and never stored."""
        if not TENANT_PATTERN.match(tenant):
            raise ValueError("a tenant name is 1-64 lowercase letters, digits, '-' or '_'")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        mapping = {"tenant": tenant, "name": name, "created_at": repr(time.time())}
        await self.redis.hset(Keys.api_key(hash_key(key)), mapping=mapping)  # type: ignore[misc]
        return key

    async def revoke(self, key: str) -> bool:
        self._cache.pop(hash_key(key), None)
        return bool(await self.redis.delete(Keys.api_key(hash_key(key))))

    async def tenant_for(self, key: str) -> str | None:
        """The tenant owning ``key``, or ``None`` for an unknown key."""
        digest = hash_key(key)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        raw: bytes | None = await self.redis.hget(Keys.api_key(digest), "tenant")  # type: ignore[misc]
        tenant = raw.decode() if raw else None
        if self.cache_ttl_s:
            if len(self._cache) > 10_000:  # bounded: a flood of bad keys cannot grow it without limit
                self._cache.clear()
            self._cache[digest] = (now + self.cache_ttl_s, tenant)
        return tenant
