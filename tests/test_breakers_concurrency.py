"""Breakers open only at their threshold: workers' calls interleaved on one Redis, checked against a model.

Several :class:`Breakers` on their own Redis connections stand for several worker processes. Their
calls (random outcomes at a seeded failure rate) finish in concurrent rounds, and an independent
count of what each worker has seen bounds the window any decision can have judged:

* failures are counted at once, so a judging failure sees at most every failure so far;
* it sees at least every success its own worker saw before it, and every success another worker
  had written (an explicit ``flush``, or a failure of its own that carried them);
* it sees at most every success seen so far (timer flushes land whenever they land).

A breaker that opens must have had, in some judging worker's lower bound, failures / calls at or
over ``failure_ratio``, and at least ``min_calls`` calls in the upper bound; a failure that leaves
the window at or over the ratio with ``min_calls`` for certain must open it. A probe's success
forgets the window; the run goes on from there.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis.asyncio import Redis

from aijobs.errors import ProviderUnavailable
from aijobs.routing.breakers import Breakers
from aijobs.routing.config import BreakerConfig
from aijobs.routing.policy import Target

WORKERS = 5
COOLDOWN_S = 0.005


@pytest.fixture
async def clients(redis_url: str) -> AsyncIterator[list[Redis]]:
    clients = [Redis.from_url(redis_url) for _ in range(WORKERS)]
    yield clients
    for client in clients:
        await client.aclose()


def fresh_target() -> Target:
    return Target(f"prop{uuid.uuid4().hex[:8]}", "m")


def failure(target: Target) -> ProviderUnavailable:
    return ProviderUnavailable("500", provider=target.provider, model=target.model, status=500)


@dataclass
class Window:
    """What the workers have seen since the window was last forgotten."""

    failures: int = 0
    seen: list[int] = field(default_factory=lambda: [0] * WORKERS)  # successes per worker
    written: list[int] = field(default_factory=lambda: [0] * WORKERS)  # ... surely in Redis
    stray: int = 0  # successes seen before the reset that a late flush may still add

    def most_successes(self) -> int:
        return sum(self.seen) + self.stray

    def fewest_successes(self, judge: int) -> int:
        """The successes a failure of worker ``judge`` (its earlier calls all seen) surely counts."""
        return self.seen[judge] + sum(w for i, w in enumerate(self.written) if i != judge)


async def state_of(redis: Redis, target: Target, breakers: Breakers) -> str:
    raw: bytes | None = await redis.hget(breakers._state_key(target), "state")  # type: ignore[misc]
    return (raw or b"closed").decode()


async def run_trial(clients: list[Redis], seed: int, fault_rate: float, config: BreakerConfig) -> int:
    """One seeded run of interleaved rounds; returns how many times the breaker opened."""
    rng = random.Random(seed)
    target = fresh_target()
    workers = [Breakers(client, config, [target]) for client in clients]
    window, opened = Window(), 0
    for _ in range(60):
        if opened == 8:  # enough reopenings: the rest would mostly wait out cooldowns
            break
        calls = [(rng.randrange(WORKERS), rng.random() < fault_rate) for _ in range(rng.randint(1, 6))]
        before = Window(window.failures, list(window.seen), list(window.written), window.stray)
        await asyncio.gather(
            *(
                workers[w].record(target, rng.uniform(1, 50), failure(target) if failed else None)
                for w, failed in calls
            )
        )
        for w, failed in calls:
            window.failures += failed
            window.seen[w] += not failed
        for w in {w for w, failed in calls if failed}:  # its failure carried what it saw before
            window.written[w] = max(window.written[w], before.seen[w])
        if rng.random() < 0.15:
            w = rng.randrange(WORKERS)
            await workers[w].flush()
            window.written[w] = window.seen[w]
        judges = sorted({w for w, failed in calls if failed})
        if not judges:
            continue
        state = await state_of(clients[0], target, workers[0])
        most_calls = window.failures + window.most_successes()
        if state == "open":  # it opened in this round, on one of these workers' failures
            ratios = [window.failures / (window.failures + before.fewest_successes(w)) for w in judges]
            context = (seed, fault_rate, window, before, judges)
            assert most_calls >= config.min_calls, context
            assert max(ratios) >= config.failure_ratio, context
            opened += 1
            await asyncio.sleep(COOLDOWN_S + 0.002)
            prober = rng.randrange(WORKERS)
            assert await workers[prober].admit(target, 5.0) == 0.0
            await workers[prober].record(target, 1.0, None)  # the probe works: the window is forgotten
            assert await state_of(clients[0], target, workers[0]) == "closed"
            window = Window(stray=window.most_successes() - sum(window.written) + 1)
            continue
        fewest_calls = window.failures + min(before.fewest_successes(w) for w in judges)
        if fewest_calls >= config.min_calls:
            ratio = window.failures / (window.failures + window.most_successes())
            assert ratio < config.failure_ratio, (seed, fault_rate, window, before, judges)
    for worker in workers:
        await worker.flush()
    return opened


@pytest.mark.parametrize("failure_ratio", [0.5, 0.3])
async def test_interleaved_workers_open_a_breaker_only_at_its_threshold(
    clients: list[Redis], failure_ratio: float
) -> None:
    config = BreakerConfig(
        window_s=600, min_calls=8, failure_ratio=failure_ratio, cooldown_s=COOLDOWN_S, refresh_s=0.001
    )
    opened: dict[float, int] = {}
    for i, fault_rate in enumerate([0.05, 0.15, 0.25, 0.4, 0.55, 0.7, 0.9]):
        opened[fault_rate] = 0
        for seed in range(3):
            opened[fault_rate] += await run_trial(clients, 1000 * i + seed, fault_rate, config)
    assert opened[0.7] > 0 and opened[0.9] > 0, opened  # well above the ratio it opens (again after probes)


async def test_a_burst_of_failures_is_judged_with_the_successes_seen_before_it(redis: Redis) -> None:
    config = BreakerConfig(window_s=600, min_calls=10, failure_ratio=0.5, cooldown_s=30)
    target = fresh_target()
    breakers = Breakers(redis, config, [target])
    for _ in range(30):
        await breakers.record(target, 5.0, None)  # not written yet: they wait for a flush
    for _ in range(29):
        await breakers.record(target, 5.0, failure(target))
        assert await state_of(redis, target, breakers) == "closed"  # 29 / 59 < 0.5
    await breakers.record(target, 5.0, failure(target))
    assert await state_of(redis, target, breakers) == "open"  # 30 / 60
    status = (await breakers.status())[0]
    assert status["window_calls"] == 60 and status["error_rate"] == 0.5


class SlowPipeline:
    """A pipeline whose ``execute`` sends only after a while: a flush still on its way."""

    def __init__(self, pipe: Any) -> None:
        self._pipe = pipe

    async def __aenter__(self) -> SlowPipeline:
        await self._pipe.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._pipe.__aexit__(*exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)

    async def execute(self) -> Any:
        await asyncio.sleep(0.1)
        return await self._pipe.execute()


class SlowFlushes:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    def pipeline(self, transaction: bool = True) -> SlowPipeline:
        return SlowPipeline(self._redis.pipeline(transaction=transaction))


async def test_a_failure_waits_for_a_flush_on_its_way(redis: Redis) -> None:
    config = BreakerConfig(window_s=600, min_calls=2, failure_ratio=0.5, cooldown_s=30)
    target = fresh_target()
    breakers = Breakers(redis, config, [target])
    breakers.redis = SlowFlushes(redis)  # type: ignore[assignment]
    for _ in range(3):
        await breakers.record(target, 5.0, None)
    flushing = asyncio.create_task(breakers.flush())
    await asyncio.sleep(0)  # the flush's write has begun; its successes are no longer pending
    await asyncio.gather(*(breakers.record(target, 5.0, failure(target)) for _ in range(2)))
    await flushing
    assert await state_of(redis, target, breakers) == "closed"  # 2 / 5
    await breakers.record(target, 5.0, failure(target))
    assert await state_of(redis, target, breakers) == "open"  # 3 / 6


async def test_a_probe_that_works_forgets_the_window_even_within_its_bucket(redis: Redis) -> None:
    # Buckets of 100 s: the failures that opened the breaker share the probe's bucket.
    config = BreakerConfig(window_s=600, min_calls=4, failure_ratio=0.5, cooldown_s=COOLDOWN_S)
    target = fresh_target()
    breakers = Breakers(redis, config, [target])
    for _ in range(4):
        await breakers.record(target, 5.0, failure(target))
    assert breakers.tripped(target)
    await asyncio.sleep(COOLDOWN_S + 0.002)
    assert await breakers.admit(target, 5.0) == 0.0  # the half-open probe
    await breakers.record(target, 5.0, None)
    await breakers.record(target, 5.0, failure(target))  # 1 of 2 calls since: under min_calls
    assert await state_of(redis, target, breakers) == "closed"
    status = (await breakers.status())[0]
    assert status["state"] == "closed" and status["window_calls"] == 2 and status["error_rate"] == 0.5
    for _ in range(2):
        await breakers.record(target, 5.0, failure(target))
    assert await state_of(redis, target, breakers) == "open"  # 3 of 4
