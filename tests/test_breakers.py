"""Circuit breakers in Redis, driven by the Router over real HTTP (llmock) and shared between routers."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
from redis.asyncio import Redis

from aijobs.errors import ProviderRejected
from aijobs.providers.base import ProviderContext
from aijobs.providers.registry import ADAPTERS
from aijobs.routing.breakers import Breakers
from aijobs.routing.config import BreakerConfig, ProviderConfig
from aijobs.routing.policy import Feature, RetryPolicy, Target
from aijobs.routing.router import RouteFailed, Router
from aijobs.types.chat import ChatInput

CHAT = ChatInput.model_validate({"messages": [{"role": "user", "content": "hello"}]})
ONCE = RetryPolicy(attempts=1)
FIRST = {"model": "deepseek-chat"}  # faults hit the first target only
CONFIG = BreakerConfig(window_s=30, min_calls=4, failure_ratio=0.5, cooldown_s=0.6, refresh_s=0.05)


@pytest.fixture
async def targets() -> tuple[Target, Target]:
    # Fresh provider names per test: breaker state lives in the session's Redis.
    tag = uuid.uuid4().hex[:6]
    return Target(f"first{tag}", "deepseek-chat"), Target(f"second{tag}", "deepseek-reasoner")


@pytest.fixture
async def adapters(
    llmock_url: str, targets: tuple[Target, Target]
) -> AsyncIterator[dict[tuple[str, str], Any]]:
    async with httpx2.AsyncClient() as http:
        await http.post(llmock_url + "/_llmock/reset")
        config = ProviderConfig(kind="openai", preset="deepseek", base_url=llmock_url + "/v1")
        yield {
            (t.provider, "chat"): ADAPTERS[("openai", "chat")](
                ProviderContext(t.provider, config, "k", http, {})
            )
            for t in targets
        }


def router(adapters: dict[tuple[str, str], Any], redis: Redis, targets: tuple[Target, Target]) -> Router:
    return Router(adapters, random.Random(1), Breakers(redis, CONFIG, list(targets)))


def feature(targets: tuple[Target, Target]) -> Feature:
    return Feature("f", "chat", "interactive", targets, 5.0, None, ONCE)


async def faults(llmock_url: str, *behaviors: dict[str, Any]) -> None:
    async with httpx2.AsyncClient() as admin:
        await admin.post(llmock_url + "/_llmock/scenario", json={"behaviors": list(behaviors)})


async def test_a_breaker_opens_other_workers_skip_the_target_and_a_probe_recloses_it(
    adapters: dict[tuple[str, str], Any], redis: Redis, llmock_url: str, targets: tuple[Target, Target]
) -> None:
    first, second = targets
    worker_a, worker_b = router(adapters, redis, targets), router(adapters, redis, targets)
    await faults(llmock_url, {"type": "fail", "status": 500, "times": 4, "match": FIRST})
    for _ in range(4):  # each job: first fails (500), second serves
        outcome = await worker_a.run(feature(targets), CHAT)
        assert outcome.target == second
    # Four calls, all failed: worker A's breaker view opened at once, and worker B reads it from Redis.
    outcome = await worker_b.run(feature(targets), CHAT)
    assert outcome.target == second and outcome.skipped == [str(first)]
    assert [a.provider for a in outcome.attempts] == [second.provider]
    status = {s["target"]: s for s in await worker_b.breakers.status()}  # type: ignore[union-attr]
    assert status[str(first)]["state"] == "open" and status[str(first)]["error_rate"] == 1.0
    await asyncio.sleep(CONFIG.cooldown_s + 0.1)
    assert {s["target"]: s for s in await worker_b.breakers.status()}[str(first)]["state"] == "half_open"  # type: ignore[union-attr]
    # One probe goes through (llmock answers now) and closes the breaker for everyone.
    probe_a, probe_b = await asyncio.gather(
        worker_a.run(feature(targets), CHAT), worker_b.run(feature(targets), CHAT)
    )
    assert sorted([probe_a.target.provider, probe_b.target.provider]) == sorted(
        [first.provider, second.provider]
    )
    await asyncio.sleep(CONFIG.refresh_s * 2)
    assert (await worker_b.run(feature(targets), CHAT)).target == first
    state = {s["target"]: s for s in await worker_a.breakers.status()}[str(first)]  # type: ignore[union-attr]
    assert state["state"] == "closed" and state["times_opened"] == 1


async def test_a_failed_probe_opens_the_breaker_again(
    adapters: dict[tuple[str, str], Any], redis: Redis, llmock_url: str, targets: tuple[Target, Target]
) -> None:
    first, second = targets
    worker = router(adapters, redis, targets)
    await faults(llmock_url, {"type": "fail", "status": 503, "times": 5, "match": FIRST})
    for _ in range(4):
        await worker.run(feature(targets), CHAT)
    await asyncio.sleep(CONFIG.cooldown_s + 0.1)
    outcome = await worker.run(feature(targets), CHAT)  # the probe meets the fifth 503
    assert [a.provider for a in outcome.attempts] == [first.provider, second.provider]
    assert (await worker.run(feature(targets), CHAT)).skipped == [str(first)]


async def test_a_429_cools_the_target_down_for_its_retry_after(
    adapters: dict[tuple[str, str], Any], redis: Redis, llmock_url: str, targets: tuple[Target, Target]
) -> None:
    first, second = targets
    worker = router(adapters, redis, targets)
    await faults(llmock_url, {"type": "fail", "status": 429, "retry_after": 1, "times": 1, "match": FIRST})
    assert (await worker.run(feature(targets), CHAT)).target == second
    status = {s["target"]: s for s in await worker.breakers.status()}  # type: ignore[union-attr]
    assert status[str(first)]["state"] == "cooldown"
    cooling = await worker.run(feature(targets), CHAT)  # the cooling target goes last
    assert cooling.target == second and [a.provider for a in cooling.attempts] == [second.provider]
    await asyncio.sleep(1.1)
    assert (await worker.run(feature(targets), CHAT)).target == first  # no probe needed after a cooldown


async def test_a_cooldown_never_fails_a_job_that_can_wait_it_out(
    adapters: dict[tuple[str, str], Any], redis: Redis, llmock_url: str, targets: tuple[Target, Target]
) -> None:
    first, _ = targets
    worker = router(adapters, redis, targets)
    await faults(llmock_url, {"type": "fail", "status": 429, "retry_after": 1, "times": 2})
    with pytest.raises(RouteFailed):  # both targets answer 429 and cool down
        await worker.run(feature(targets), CHAT)
    started = time.monotonic()
    outcome = await worker.run(feature(targets), CHAT)  # waits for the first cooldown to end
    assert outcome.target == first and time.monotonic() - started >= 0.8


async def test_refused_inputs_never_trip_a_breaker(
    adapters: dict[tuple[str, str], Any], redis: Redis, llmock_url: str, targets: tuple[Target, Target]
) -> None:
    first, _ = targets
    worker = router(adapters, redis, targets)
    await faults(llmock_url, {"type": "fail", "status": 400, "times": 6})
    for _ in range(6):
        with pytest.raises(RouteFailed) as failed:
            await worker.run(feature(targets), CHAT)
        assert isinstance(failed.value.error, ProviderRejected)
    # Healthy calls are counted in batches.
    await worker.breakers.flush()  # type: ignore[union-attr]
    status = {s["target"]: s for s in await worker.breakers.status()}  # type: ignore[union-attr]
    assert status[str(first)]["state"] == "closed" and status[str(first)]["error_rate"] == 0.0
    assert status[str(first)]["window_calls"] == 6 and status[str(first)]["p50_latency_ms"] is not None


async def test_when_every_target_is_open_the_route_fails_transiently(
    adapters: dict[tuple[str, str], Any], redis: Redis, llmock_url: str, targets: tuple[Target, Target]
) -> None:
    worker = router(adapters, redis, targets)
    await faults(llmock_url, {"type": "fail", "status": 500, "times": 8})
    for _ in range(4):
        with pytest.raises(RouteFailed):
            await worker.run(feature(targets), CHAT)
    with pytest.raises(RouteFailed) as failed:
        await worker.run(feature(targets), CHAT)
    assert failed.value.attempts == [] and failed.value.skipped == [str(t) for t in targets]
    assert failed.value.error.code == "provider_unavailable"
