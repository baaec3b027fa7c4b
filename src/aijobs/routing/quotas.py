"""Batch traffic's share of a provider: requests and tokens per minute, counted in Redis by every worker.

A provider configured with ``batch_rpm`` and/or ``batch_tpm`` lets batch lines (jobs on the batch
lane) send it at most that many requests and tokens per UTC minute, all workers together, so a large
batch cannot use up the provider's own rate limits that interactive traffic needs.

The Router asks just before a target's turn (:meth:`Quotas.take`): one script reads both counters
and, only if both have room, counts the call. Tokens are an estimate made before the call (the
request's text, plus its ``max_tokens`` when it sets one), since the real count is only known after.
A request larger than the whole token share may still go alone at the start of a minute, or it could
never run. Fixed windows: a burst at a minute's end and the next one's start can reach twice the
rate for a moment, which providers' own limiters allow for.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from redis.asyncio import Redis

from aijobs.keys import Keys
from aijobs.tokens import count_tokens

WINDOW_S = 60

# KEYS: requests, tokens. ARGV: rpm (0: none), tpm (0: none), tokens, ttl s. → 1 counted, 0 refused.
_TAKE = """
local rpm, tpm, tokens = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if rpm > 0 and tonumber(redis.call('GET', KEYS[1]) or '0') >= rpm then return 0 end
local used = tonumber(redis.call('GET', KEYS[2]) or '0')
if tpm > 0 and used > 0 and used + tokens > tpm then return 0 end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('INCRBY', KEYS[2], tokens)
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 1
"""


@dataclass(frozen=True, slots=True)
class Quota:
    """A provider's share for batch traffic; ``None`` is no limit."""

    rpm: int | None = None
    tpm: int | None = None


class Quotas:
    """Takes batch calls out of each provider's per-minute share (see the module docstring)."""

    def __init__(
        self, redis: Redis, quotas: Mapping[str, Quota], clock: Callable[[], float] = time.time
    ) -> None:
        self._quotas = {name: quota for name, quota in quotas.items() if quota.rpm or quota.tpm}
        self._take = redis.register_script(_TAKE)
        self._clock = clock

    def limits(self, provider: str) -> bool:
        return provider in self._quotas

    async def take(self, provider: str, tokens: int) -> float:
        """Count one call of ``tokens`` if the provider's share has room: 0.0; else the seconds until
        the next minute, when it may have room again."""
        quota = self._quotas.get(provider)
        if quota is None:
            return 0.0
        now = self._clock()
        minute = int(now // WINDOW_S)
        keys = [Keys.quota(provider, minute, "requests"), Keys.quota(provider, minute, "tokens")]
        args = [quota.rpm or 0, quota.tpm or 0, tokens, WINDOW_S * 2]
        if await self._take(keys=keys, args=args):
            return 0.0
        return (minute + 1) * WINDOW_S - now


def estimate_tokens(request: BaseModel) -> int:
    """The tokens a request will cost, guessed before the call: its text, and ``max_tokens`` if set."""
    return _text_tokens(request.model_dump(exclude_none=True)) + int(getattr(request, "max_tokens", 0) or 0)


def _text_tokens(value: Any) -> int:
    if isinstance(value, str):
        return 0 if value.startswith("data:") else count_tokens(value)  # an inlined image is not text
    if isinstance(value, dict):
        return sum(_text_tokens(item) for item in value.values())
    if isinstance(value, list):
        return sum(_text_tokens(item) for item in value)
    return 0
