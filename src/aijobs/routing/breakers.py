"""Circuit breakers per (provider, model), shared by every worker through Redis.

Each target's calls are counted in time buckets (a rolling ``window_s`` in six buckets). A failure
that leaves the window with at least ``min_calls`` calls and a failure ratio of ``failure_ratio`` or
more *opens* the breaker: the target is skipped for ``cooldown_s``. Then exactly one caller wins the
*half-open* probe; its success closes the breaker (and forgets the window), its failure opens it
again. A 429 with ``Retry-After`` puts the target in *cooldown* until then, after which it is closed
again with no probe.

Only upstream health counts: timeouts, 5xx, 429s, bad responses, auth and missing models are
failures; an input the provider refused is a call that worked; errors of our own (a tenant over
budget, an invalid job) never reach here.

Each process keeps a snapshot of every target's state, refreshed at most every ``refresh_s``, so the
common path (closed) costs no round trip. Healthy calls are counted in one batched write every
``FLUSH_S``; a failure is counted at once, and its script returns the target's fresh state.

Successes and failures are counted alike: a failure's script (and a probe's, and a 429's) also
carries the healthy calls of that target this process has not flushed yet, adds them to their own
buckets, and only then counts the call and judges, all in one atomic step on one window (the same
six buckets ``status`` shows). So a decision never misses a success its process saw before the
failure, whatever the batching; only another process's last ``FLUSH_S`` of healthy calls can be
still on its way. A probe's success forgets the window by clearing its counts (latencies stay).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from aijobs.errors import AijobsError, ProviderError
from aijobs.histogram import bucket_of, quantile
from aijobs.keys import Keys
from aijobs.routing.config import BreakerConfig
from aijobs.routing.policy import Target
from aijobs.scriptbatch import ScriptBatcher

log = logging.getLogger(__name__)

BUCKETS = 6
#: Healthy calls are counted in batches this often; failures are counted (and judged) at once.
FLUSH_S = 0.2
FAILURES = frozenset(
    {
        "provider_rate_limited", "provider_timeout", "provider_unavailable", "provider_bad_response",
        "provider_auth", "provider_model_not_found",
    }
)  # fmt: skip

# KEYS: state, the window's buckets (current first), then any other bucket with carried counts.
# ARGV: now_ms, failed, lat field, min calls, ratio, cooldown_ms, retry_after_ms, probe, bucket
# ttl_s, window size, then per bucket key (aligned with KEYS[2..]) the carried healthy calls: a
# number n, then n (field, count) pairs.
_RECORD = """
local now = tonumber(ARGV[1])
local nw = tonumber(ARGV[10])
local at = 11
for k = 2, #KEYS do
  local n = tonumber(ARGV[at])
  for j = 1, n do redis.call('HINCRBY', KEYS[k], ARGV[at + 2 * j - 1], ARGV[at + 2 * j]) end
  if n > 0 then redis.call('EXPIRE', KEYS[k], ARGV[9]) end
  at = at + 1 + 2 * n
end
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local until_ms = tonumber(redis.call('HGET', KEYS[1], 'until') or '0')
local function open()
  state, until_ms = 'open', now + tonumber(ARGV[6])
  redis.call('HINCRBY', KEYS[1], 'opened', 1)
end
if ARGV[8] == '1' and ARGV[2] ~= '1' then  -- the probe worked: forget the window, then count it
  for k = 2, 1 + nw do redis.call('HDEL', KEYS[k], 'calls', 'fails') end
  redis.call('HDEL', KEYS[1], 'reset')
end
redis.call('HINCRBY', KEYS[2], 'calls', 1)
if ARGV[2] == '1' then redis.call('HINCRBY', KEYS[2], 'fails', 1) end
redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
redis.call('EXPIRE', KEYS[2], ARGV[9])
if ARGV[8] == '1' then
  redis.call('HDEL', KEYS[1], 'probe_until')
  if ARGV[2] == '1' then open() else state, until_ms = 'closed', 0 end
elseif tonumber(ARGV[7]) > 0 then
  if not (state == 'open' and until_ms > now) then
    state, until_ms = 'cooldown', math.max(until_ms, now + tonumber(ARGV[7]))
  end
elseif ARGV[2] == '1' and state ~= 'open' then
  local calls, fails = 0, 0
  for k = 2, 1 + nw do
    local c, f = unpack(redis.call('HMGET', KEYS[k], 'calls', 'fails'))
    calls, fails = calls + tonumber(c or '0'), fails + tonumber(f or '0')
  end
  if calls >= tonumber(ARGV[4]) and fails / calls >= tonumber(ARGV[5]) then open() end
end
redis.call('HSET', KEYS[1], 'state', state, 'until', until_ms)
return {state, tostring(until_ms)}
"""

# KEYS: state   ARGV: now_ms, probe ms.  1 when the caller may call the target (and, if the
# breaker was open, now holds its one half-open probe).
_ALLOW = """
local now = tonumber(ARGV[1])
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local until_ms = tonumber(redis.call('HGET', KEYS[1], 'until') or '0')
if state == 'closed' then return 1 end
if until_ms > now then return 0 end
if state == 'cooldown' then return 1 end
if tonumber(redis.call('HGET', KEYS[1], 'probe_until') or '0') > now then return 0 end
redis.call('HSET', KEYS[1], 'probe_until', now + tonumber(ARGV[2]))
return 2
"""


@dataclass(slots=True)
class Snapshot:
    state: str = "closed"
    until_s: float = 0.0


def counts_as_failure(error: AijobsError | None) -> bool:
    return isinstance(error, ProviderError) and error.code in FAILURES


class Breakers:
    """The breakers of ``targets``, over ``redis``, configured by ``config``."""

    def __init__(self, redis: Redis, config: BreakerConfig, targets: list[Target]) -> None:
        self.redis = redis
        self.config = config
        self.targets = sorted(set(targets), key=str)  # a set: callers may pass repeats
        self._bucket_s = config.window_s / BUCKETS
        self._ttl_s = int(config.window_s + self._bucket_s)  # a bucket lives as long as its window
        self._record = ScriptBatcher(redis, redis.register_script(_RECORD))
        self._allow = redis.register_script(_ALLOW)
        self._snapshot: dict[Target, Snapshot] = {}
        self._refreshed_at = float("-inf")
        self._refreshing: asyncio.Task[None] | None = None
        self._probes: set[Target] = set()
        #: Healthy calls not written yet: target -> bucket id -> field -> count.
        self._unflushed: dict[Target, dict[int, dict[str, int]]] = {}
        self._flushing: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Task[None]] = set()  # flushes on their way to Redis

    def _state_key(self, target: Target) -> str:
        return Keys.breaker(str(target))

    def _bucket_id(self, now_s: float) -> int:
        return int(now_s // self._bucket_s)

    def _bucket_keys(self, target: Target, now_s: float) -> list[str]:
        """The window's buckets, the current one first."""
        current = self._bucket_id(now_s)
        return [Keys.breaker_bucket(str(target), current - i) for i in range(BUCKETS)]

    async def admit(self, target: Target, probe_timeout_s: float) -> float | None:
        """When ``target`` may be called: ``0.0`` now, ``None`` not in this job, else in that many seconds.

        A target cooling down after a 429 is admitted after its Retry-After (callers try it last, so
        a cooldown never fails a job that could wait); an open breaker's target is not admitted,
        unless this call takes its one half-open probe (see :meth:`record`).
        """
        if time.monotonic() - self._refreshed_at > self.config.refresh_s:
            try:
                await self.refresh()
            except Exception as exc:  # without Redis, the last known state (or closed) decides
                log.warning("could not refresh breaker states: %s", exc)
                self._refreshed_at = time.monotonic()
        snap = self._snapshot.get(target)
        if snap is None or snap.state == "closed":
            return 0.0
        now_s = time.time()
        if snap.until_s > now_s:
            return snap.until_s - now_s if snap.state == "cooldown" else None
        args = [int(now_s * 1000), int(probe_timeout_s * 1000)]
        try:
            verdict = await self._allow(keys=[self._state_key(target)], args=args)
        except Exception as exc:
            log.warning("could not take the half-open probe of %s: %s", target, exc)
            return None
        if verdict == 2:
            self._probes.add(target)
        return 0.0 if verdict else None

    def tripped(self, target: Target) -> bool:
        """Whether ``target``'s breaker opened (a 429 cooldown is not: a retry already waits it out)."""
        snap = self._snapshot.get(target)
        return snap is not None and snap.state == "open" and snap.until_s > time.time()

    async def record(self, target: Target, latency_ms: float, error: AijobsError | None) -> None:
        """Count one finished call of ``target``; ``error`` is ``None`` for a success."""
        if error is not None and not isinstance(error, ProviderError):
            return
        failed = counts_as_failure(error)
        retry_after_s = 0.0
        if isinstance(error, ProviderError) and error.code == "provider_rate_limited":
            retry_after_s = error.retry_after_s or 0.0
        probe = target in self._probes
        self._probes.discard(target)
        if not (failed or probe or retry_after_s):
            self._count_later(target, time.time(), latency_ms)
            return
        if self._writes:  # a flush on its way holds successes seen before this call: let it land
            await asyncio.wait(set(self._writes))
        now_s = time.time()
        # This process's unwritten healthy calls of the target go with this call, so the window the
        # script judges holds every success seen before it (counted alike, in their own buckets).
        carried = self._unflushed.pop(target, {})
        current = self._bucket_id(now_s)
        ids = [current - i for i in range(BUCKETS)]
        ids += sorted(set(carried) - set(ids))  # a clock step can leave counts outside the window
        args: list[Any] = [
            int(now_s * 1000), int(failed), f"lat:{bucket_of(latency_ms)}", self.config.min_calls,
            self.config.failure_ratio, int(self.config.cooldown_s * 1000),
            int(retry_after_s * 1000), int(probe), self._ttl_s, BUCKETS,
        ]  # fmt: skip
        for bucket in ids:
            counts = carried.get(bucket, {})
            args.append(len(counts))
            for name, count in counts.items():
                args += [name, count]
        keys = [self._state_key(target), *(Keys.breaker_bucket(str(target), i) for i in ids)]
        state, until_ms = await self._record(keys, args)
        self._snapshot[target] = Snapshot(state.decode(), int(until_ms) / 1000)

    def _count_later(self, target: Target, now_s: float, latency_ms: float) -> None:
        """Add a healthy call to the next batched flush: successes change no state, so they can wait."""
        counts = self._unflushed.setdefault(target, {}).setdefault(self._bucket_id(now_s), {})
        counts["calls"] = counts.get("calls", 0) + 1
        bucket = f"lat:{bucket_of(latency_ms)}"
        counts[bucket] = counts.get(bucket, 0) + 1
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(FLUSH_S)
        await self.flush()

    async def flush(self) -> None:
        """Write the batched healthy calls (one pipeline for every bucket touched since the last);
        returns once every flush begun so far has landed."""
        unflushed, self._unflushed = self._unflushed, {}
        if unflushed:
            write = asyncio.create_task(self._write(unflushed))
            self._writes.add(write)
            write.add_done_callback(self._writes.discard)
        if self._writes:
            await asyncio.wait(set(self._writes))

    async def _write(self, unflushed: dict[Target, dict[int, dict[str, int]]]) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for target, buckets in unflushed.items():
                    for bucket, counts in buckets.items():
                        key = Keys.breaker_bucket(str(target), bucket)
                        for name, count in counts.items():
                            pipe.hincrby(key, name, count)
                        pipe.expire(key, self._ttl_s)
                await pipe.execute()
        except Exception as exc:  # the counts are lost; the window heals as new calls arrive
            log.warning("could not record the healthy calls of %d targets: %s", len(unflushed), exc)

    async def refresh(self) -> None:
        """Read every target's state (one round trip; concurrent callers share it)."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self._read_states())
        await asyncio.shield(self._refreshing)

    async def _read_states(self) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for target in self.targets:
                pipe.hmget(self._state_key(target), ["state", "until"])
            rows = await pipe.execute()
        for target, (state, until_ms) in zip(self.targets, rows, strict=True):
            self._snapshot[target] = Snapshot((state or b"closed").decode(), int(until_ms or 0) / 1000)
        self._refreshed_at = time.monotonic()

    async def status(self) -> list[dict[str, Any]]:
        """Every target's state, with its window's calls, error rate and p50 latency."""
        now_s = time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            for target in self.targets:
                pipe.hgetall(self._state_key(target))
                for key in self._bucket_keys(target, now_s):
                    pipe.hgetall(key)
            rows = await pipe.execute()
        out = []
        for i, target in enumerate(self.targets):
            state_row, *buckets = rows[i * (BUCKETS + 1) : (i + 1) * (BUCKETS + 1)]
            out.append(_describe(target, state_row, buckets, now_s))
        return out


def _describe(
    target: Target, state_row: dict[bytes, bytes], buckets: list[dict[bytes, bytes]], now_s: float
) -> dict[str, Any]:
    state = state_row.get(b"state", b"closed").decode()
    until_s = int(state_row.get(b"until", b"0")) / 1000
    if state == "open" and until_s <= now_s:
        state = "half_open"
    elif state == "cooldown" and until_s <= now_s:
        state = "closed"
    calls = fails = 0
    latencies: dict[int, float] = {}
    for bucket in buckets:
        for name, value in bucket.items():
            key = name.decode()
            if key == "calls":
                calls += int(value)
            elif key == "fails":
                fails += int(value)
            elif key.startswith("lat:"):
                latencies[int(key[4:])] = latencies.get(int(key[4:]), 0) + int(value)
    return {
        "provider": target.provider, "model": target.model, "target": str(target), "state": state,
        "until": until_s if state in ("open", "cooldown") else None, "window_calls": calls,
        "error_rate": round(fails / calls, 4) if calls else None, "p50_latency_ms": quantile(latencies, 0.5),
        "times_opened": int(state_row.get(b"opened", b"0")),
    }  # fmt: skip
