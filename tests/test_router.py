"""The Router over real HTTP (llmock): retries with backoff, Retry-After, fallback, and where it stops."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import orjson
import pytest

from aijobs.errors import ProviderRateLimited, ProviderUnavailable
from aijobs.providers.base import ProviderContext
from aijobs.providers.registry import ADAPTERS
from aijobs.routing.config import ProviderConfig
from aijobs.routing.policy import Feature, RetryPolicy, Target
from aijobs.routing.router import Outcome, RouteFailed, Router
from aijobs.types.chat import ChatInput, ChatResult

CHAT = ChatInput.model_validate({"messages": [{"role": "user", "content": "hello"}]})
FAST = RetryPolicy(attempts=2, backoff_base_s=0.05, backoff_cap_s=0.1, retry_after_cap_s=5)


@pytest.fixture
async def router(llmock_url: str) -> AsyncIterator[Router]:
    async with httpx2.AsyncClient() as http:
        await http.post(llmock_url + "/_llmock/reset")
        adapters: dict[tuple[str, str], Any] = {}
        for name in ("first", "second"):
            config = ProviderConfig(kind="openai", preset="deepseek", base_url=llmock_url + "/v1")
            adapters[(name, "chat")] = ADAPTERS[("openai", "chat")](
                ProviderContext(name, config, "k", http, {})
            )
        yield Router(adapters, random.Random(7))


def feature(timeout_s: float = 5.0, retry: RetryPolicy = FAST) -> Feature:
    targets = (Target("first", "deepseek-chat"), Target("second", "deepseek-chat"))
    return Feature("f", "chat", "interactive", targets, timeout_s, None, retry)


async def faults(llmock_url: str, *behaviors: dict[str, Any]) -> None:
    async with httpx2.AsyncClient() as admin:
        await admin.post(llmock_url + "/_llmock/scenario", json={"behaviors": list(behaviors)})


def outcomes(attempts: list[Any]) -> list[tuple[str, str | None]]:
    return [(a.provider, a.error_code) for a in attempts]


async def test_server_errors_are_retried_then_the_next_target_serves(router: Router, llmock_url: str) -> None:
    await faults(llmock_url, {"type": "fail", "status": 500, "times": 2})
    outcome = await router.run(feature(), CHAT)
    assert outcome.target.provider == "second"
    assert outcomes(outcome.attempts) == [
        ("first", "provider_unavailable"), ("first", "provider_unavailable"), ("second", None),
    ]  # fmt: skip
    assert outcome.route()["fallback_path"] == ["first:deepseek-chat", "second:deepseek-chat"]


async def test_timeouts_fall_back(router: Router, llmock_url: str) -> None:
    await faults(llmock_url, {"type": "delay", "seconds": 1.0, "times": 2})
    outcome = await router.run(feature(timeout_s=0.3), CHAT)
    assert outcomes(outcome.attempts) == [
        ("first", "provider_timeout"),
        ("first", "provider_timeout"),
        ("second", None),
    ]


async def test_a_refused_input_ends_the_route_at_once(router: Router, llmock_url: str) -> None:
    behavior = {"type": "fail", "status": 400, "code": "content_filter", "message": "filtered", "times": 4}
    await faults(llmock_url, behavior)
    with pytest.raises(RouteFailed) as failed:
        await router.run(feature(), CHAT)
    assert failed.value.error.code == "provider_content_filtered"
    assert outcomes(failed.value.attempts) == [("first", "provider_content_filtered")]


async def test_a_target_is_left_for_good_once_the_route_moves_on(router: Router, llmock_url: str) -> None:
    await faults(llmock_url, {"type": "fail", "status": 503, "times": 4}, {"type": "fail", "status": 503})
    with pytest.raises(RouteFailed) as failed:
        await router.run(feature(), CHAT)
    assert [a.provider for a in failed.value.attempts] == ["first", "first", "second", "second"]


def test_waits_use_full_jitter_and_never_undercut_retry_after() -> None:
    router = Router({}, random.Random(1))
    policy = RetryPolicy(attempts=5, backoff_base_s=0.5, backoff_cap_s=4.0, retry_after_cap_s=30)
    unavailable = ProviderUnavailable("x", provider="p", model="m")
    for retry in (1, 2, 3, 4):
        ceiling = min(4.0, 0.5 * 2 ** (retry - 1))
        waits = [router.wait_s(policy, retry, unavailable) for _ in range(200)]
        assert all(0 <= w <= ceiling for w in waits)
        assert max(waits) > ceiling * 0.8  # the full range is used, not a fixed delay
    assert router.wait_s(policy, 1, ProviderRateLimited("x", provider="p", model="m", retry_after_s=7)) >= 7
    capped = ProviderRateLimited("x", provider="p", model="m", retry_after_s=3600)
    assert router.wait_s(policy, 1, capped) == 30


def answer(outcome: Outcome) -> ChatResult:
    assert isinstance(outcome.result, ChatResult)
    return outcome.result


def streamed(ttft_timeout_s: float = 0.3) -> Feature:
    targets = (Target("first", "deepseek-chat"), Target("second", "deepseek-chat"))
    return Feature("f", "chat", "interactive", targets, 5.0, None, FAST, ttft_timeout_s=ttft_timeout_s)


async def test_a_slow_first_token_times_out_and_falls_back(router: Router, llmock_url: str) -> None:
    await faults(llmock_url, {"type": "slow_first_token", "seconds": 1.5, "times": 2})
    started = time.monotonic()
    outcome = await router.run(streamed(), CHAT)
    assert outcomes(outcome.attempts) == [
        ("first", "provider_timeout"),
        ("first", "provider_timeout"),
        ("second", None),
    ]
    assert time.monotonic() - started < 1.4  # neither slow stream was waited out
    last = outcome.attempts[-1]
    assert last.ttft_ms is not None and 0 < last.ttft_ms <= last.latency_ms


async def test_a_streamed_answer_assembles_like_a_whole_one(router: Router, llmock_url: str) -> None:
    whole = await router.run(feature(), CHAT)
    streamed_answer = await router.run(streamed(ttft_timeout_s=2.0), CHAT)
    assert answer(streamed_answer).message.content and not answer(streamed_answer).usage.estimated
    assert answer(streamed_answer).finish_reason == answer(whole).finish_reason
    assert answer(streamed_answer).usage.input_tokens == answer(whole).usage.input_tokens


async def test_streamed_tool_calls_are_reassembled(router: Router, llmock_url: str) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    request = ChatInput.model_validate(
        {
            "messages": [{"role": "user", "content": "weather in Paris?"}],
            "tools": tools,
            "tool_choice": "required",
        }
    )
    whole = await router.run(feature(), request)
    streamed_answer = await router.run(streamed(ttft_timeout_s=2.0), request)
    expected = answer(whole).message.tool_calls
    assert expected, "llmock answers tool_choice=required with a call"
    calls = answer(streamed_answer).message.tool_calls
    assert calls and [c.function.name for c in calls] == [c.function.name for c in expected]
    assert all(orjson.loads(c.function.arguments) is not None for c in calls)
    assert answer(streamed_answer).finish_reason == "tool_calls"


async def test_an_upstream_error_on_a_stream_is_the_same_error(router: Router, llmock_url: str) -> None:
    await faults(llmock_url, {"type": "fail", "status": 429, "retry_after": 0.1, "times": 1})
    outcome = await router.run(streamed(ttft_timeout_s=2.0), CHAT)
    assert outcomes(outcome.attempts) == [("first", "provider_rate_limited"), ("first", None)]
    assert outcome.attempts[0].retry_after_s is not None


async def test_an_attempt_cut_off_while_waiting_for_its_first_token_stops_the_stream() -> None:
    stopped = asyncio.Event()

    class Silent:
        async def run(self, model: str, request: ChatInput) -> ChatResult:
            raise AssertionError("a time-to-first-token bound streams")

        async def run_streaming(self, model: str, request: ChatInput, on_delta: Any) -> ChatResult:
            try:
                await asyncio.sleep(60)
            finally:
                stopped.set()
            raise AssertionError("unreachable")

    table: dict[tuple[str, str], Any] = {("first", "chat"): Silent()}
    router = Router(table)
    one = Feature("f", "chat", "interactive", (Target("first", "m"),), 0.2, None, FAST, ttft_timeout_s=30)
    attempts: list[Any] = []
    with pytest.raises(RouteFailed):
        await router.run(one, CHAT, attempts=attempts)
    assert stopped.is_set()  # the attempt's own timeout fired while waiting for the first token
    assert [a.error_code for a in attempts] == ["provider_timeout", "provider_timeout"]
