"""Batch traffic's per-provider share (real Redis, real HTTP to llmock): counted across workers, spread
over the route's other targets when spent, and waited out into the next minute."""

from __future__ import annotations

import math
import random
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
from redis.asyncio import Redis

from aijobs.providers.base import ProviderContext
from aijobs.providers.registry import ADAPTERS
from aijobs.routing.config import ProviderConfig
from aijobs.routing.policy import Feature, RetryPolicy, Target
from aijobs.routing.quotas import Quota, Quotas, estimate_tokens
from aijobs.routing.router import Router, ShareSpent
from aijobs.types.chat import ChatInput

CHAT = ChatInput.model_validate({"messages": [{"role": "user", "content": "hello there, general"}]})
RETRY = RetryPolicy(attempts=1, backoff_base_s=0.05, backoff_cap_s=0.1, retry_after_cap_s=5)


def names() -> tuple[str, str]:
    """Provider names of this test's own (quota keys are per provider name, across tests)."""
    tag = uuid.uuid4().hex[:8]
    return f"cheap-{tag}", f"dear-{tag}"


def at(minute_offset_s: float) -> Any:
    """A clock running with real time, ``minute_offset_s`` seconds into a UTC minute now."""
    now = time.time()
    shift = math.floor(now / 60) * 60 + minute_offset_s - now
    return lambda: time.time() + shift


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_a_share_counts_requests_and_tokens_per_minute(redis: Redis) -> None:
    cheap, dear = names()
    quotas = Quotas(redis, {cheap: Quota(rpm=2), dear: Quota(tpm=100)}, clock=at(10))
    assert [await quotas.take(cheap, 1) for _ in range(2)] == [0.0, 0.0]
    wait_s = await quotas.take(cheap, 1)
    assert 49 < wait_s <= 50  # until the minute turns
    other_worker = Quotas(redis, {cheap: Quota(rpm=2)}, clock=at(11))
    assert await other_worker.take(cheap, 1) > 0  # the count is shared through Redis
    assert await quotas.take(dear, 60) == 0.0 and await quotas.take(dear, 60) > 0  # 120 > 100 tokens
    assert await quotas.take(dear, 40) == 0.0  # exactly the rest fits
    unlimited = Quotas(redis, {}, clock=at(10))
    assert not unlimited.limits(cheap) and await unlimited.take(cheap, 10**9) == 0.0


async def test_a_request_larger_than_the_share_goes_alone_in_a_fresh_minute(redis: Redis) -> None:
    cheap, _ = names()
    quotas = Quotas(redis, {cheap: Quota(tpm=50)}, clock=at(5))
    assert await quotas.take(cheap, 500) == 0.0  # or it could never run
    assert await quotas.take(cheap, 1) > 0


def test_tokens_are_estimated_from_the_text_and_max_tokens() -> None:
    plain = estimate_tokens(CHAT)
    assert plain >= 4
    assert estimate_tokens(CHAT.model_copy(update={"max_tokens": 100})) == plain + 100


@pytest.fixture
async def adapters(llmock_url: str) -> AsyncIterator[tuple[str, str, dict[tuple[str, str], Any]]]:
    cheap, dear = names()
    async with httpx2.AsyncClient() as http:
        await http.post(llmock_url + "/_llmock/reset")
        made: dict[tuple[str, str], Any] = {}
        for name in (cheap, dear):
            config = ProviderConfig(kind="openai", preset="deepseek", base_url=llmock_url + "/v1")
            made[(name, "chat")] = ADAPTERS[("openai", "chat")](ProviderContext(name, config, "k", http, {}))
        yield cheap, dear, made


def feature(*providers: str) -> Feature:
    targets = tuple(Target(p, "deepseek-chat") for p in providers)
    return Feature("background", "chat", "batch", targets, 5.0, None, RETRY)


async def test_batch_calls_past_the_share_go_to_the_next_target_and_others_are_unlimited(
    redis: Redis, adapters: tuple[str, str, dict[tuple[str, str], Any]]
) -> None:
    cheap, dear, made = adapters
    router = Router(made, random.Random(3), quotas=Quotas(redis, {cheap: Quota(rpm=2)}, clock=at(5)))
    served = [(await router.run(feature(cheap, dear), CHAT, quota=True)).target.provider for _ in range(4)]
    assert served == [cheap, cheap, dear, dear]  # batch traffic stays inside cheap's share
    interactive = [(await router.run(feature(cheap, dear), CHAT)).target.provider for _ in range(3)]
    assert interactive == [cheap] * 3  # the share limits batch lines only


async def test_a_batch_call_with_no_share_left_anywhere_says_when_there_is_room(
    redis: Redis, adapters: tuple[str, str, dict[tuple[str, str], Any]]
) -> None:
    cheap, dear, made = adapters
    quotas = Quotas(redis, {cheap: Quota(rpm=1), dear: Quota(rpm=1)}, clock=at(59.5))
    router = Router(made, random.Random(3), quotas=quotas)
    await router.run(feature(cheap, dear), CHAT, quota=True)
    await router.run(feature(cheap, dear), CHAT, quota=True)
    with pytest.raises(ShareSpent) as spent:
        await router.run(feature(cheap, dear), CHAT, quota=True)
    assert 0 < spent.value.wait_s <= 0.5 and spent.value.attempts == []  # nothing was called
