"""Calls on real Redis: what is recorded when a call succeeds in part, is cut off, or breaks unexpectedly."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from aijobs.calls import Calls, priced_fields
from aijobs.errors import ProviderRejected, ProviderUnavailable
from aijobs.jobs import JobStatus
from aijobs.prices import Price, PriceBook
from aijobs.routing import Routing, load_policy
from aijobs.routing.budgets import Budgets
from aijobs.routing.policy import Target
from aijobs.routing.router import Router
from aijobs.store import JobStore
from aijobs.types.chat import AssistantMessage, ChatInput, ChatResult
from aijobs.types.common import Usage
from tests.policies import SIM_NON_CHAT, defaults

ROUTING = (
    SIM_NON_CHAT
    + defaults("c")
    + """
[providers.other]
kind = "sim"
[providers.sim.prices.m]
input_per_mtok = 1.0
output_per_mtok = 2.0
[providers.other.prices.m]
input_per_mtok = 10.0
output_per_mtok = 20.0
[features.c]
type = "chat"
route = ["sim:m", "other:m"]
timeout_s = 5
deadline_s = 0.5
attempts = 1
[features.lost]
type = "chat"
route = ["nowhere:m"]
[providers.nowhere]
kind = "sim"
"""
)
CHAT = ChatInput.model_validate({"messages": [{"role": "user", "content": "hello"}]})


class Scripted:
    """A chat adapter whose calls do, in order, what ``script`` says: answer, refuse, be down or hang."""

    def __init__(self, script: list[str]) -> None:
        self.script = script

    async def run(self, model: str, request: ChatInput) -> ChatResult:
        step = self.script.pop(0) if self.script else "answer"
        if step == "refuse":
            raise ProviderRejected("refused", provider="sim", model=model, status=400)
        if step == "down":
            raise ProviderUnavailable("down", provider="sim", model=model, status=503)
        if step == "hang":
            await asyncio.sleep(60)
        message = AssistantMessage(content="hi")
        return ChatResult(message=message, finish_reason="stop", model=model,
                          usage=Usage(input_tokens=1000, output_tokens=500))  # fmt: skip


@pytest.fixture
def routing(tmp_path: Path) -> Routing:
    path = tmp_path / "routing.toml"
    path.write_text(ROUTING)
    return load_policy(path, {})


@pytest.fixture
def store(redis: Redis) -> JobStore:
    return JobStore(redis, 600, 600, 600)


def calls(routing: Routing, store: JobStore, redis: Redis, **adapters: Scripted) -> Calls:
    table: dict[tuple[str, str], Any] = {(name, "chat"): adapter for name, adapter in adapters.items()}
    router = Router(table)
    return Calls(routing, store, router, Budgets(redis))


async def test_choices_are_priced_each_at_its_own_target(
    routing: Routing, store: JobStore, redis: Redis
) -> None:
    # the first choice falls back from sim to other; the second is answered by sim
    engine = calls(routing, store, redis, sim=Scripted(["down"]), other=Scripted([]))
    feature = routing.features["c"]
    job = engine.new_job("t", feature, CHAT)
    call = await engine.run(job, feature, CHAT, choices=2)
    assert call.error is None and len(call.outcomes) == 2
    stored = await store.get(job.id)
    assert stored is not None and stored.usage is not None
    assert stored.usage["input_tokens"] == 2000 and stored.usage["output_tokens"] == 1000
    # sim: 1000 * 1 + 500 * 2 per million; other: 1000 * 10 + 500 * 20 per million
    assert stored.usage["cost_usd"] == pytest.approx(0.002 + 0.02)
    costs = sorted(a["cost_usd"] for a in stored.attempts if "cost_usd" in a)
    assert costs == pytest.approx([0.002, 0.02])


async def test_a_failed_choice_keeps_what_the_others_spent(
    routing: Routing, store: JobStore, redis: Redis
) -> None:
    adapters = {"sim": Scripted(["answer", "refuse"]), "other": Scripted([])}
    engine = calls(routing, store, redis, **adapters)
    feature = routing.features["c"]
    job = engine.new_job("t", feature, CHAT)
    call = await engine.run(job, feature, CHAT, choices=2)
    assert call.error is not None and call.error.code == "provider_rejected"
    stored = await store.get(job.id)
    assert stored is not None and stored.status is JobStatus.FAILED
    assert stored.usage is not None and stored.usage["input_tokens"] == 1000
    assert stored.usage["cost_usd"] == pytest.approx(0.002)
    assert [a["outcome"] for a in stored.attempts] == ["ok", "error"]


@pytest.mark.parametrize("choices", [1, 2])
async def test_a_call_cut_by_its_deadline_records_its_attempts(
    routing: Routing, store: JobStore, redis: Redis, choices: int
) -> None:
    engine = calls(routing, store, redis, sim=Scripted(["hang"] * choices), other=Scripted([]))
    feature = routing.features["c"]
    job = engine.new_job("t", feature, CHAT)
    call = await engine.run(job, feature, CHAT, choices=choices)
    assert call.error is not None and call.error.code == "gateway_deadline_exceeded"
    stored = await store.get(job.id)
    assert stored is not None and stored.status is JobStatus.FAILED
    assert [(a["provider"], a["outcome"]) for a in stored.attempts] == [("sim", "canceled")] * choices
    assert all(a["latency_ms"] >= 400 for a in stored.attempts)  # cut at the 0.5 s deadline


async def test_a_cancelled_call_records_its_attempts(routing: Routing, store: JobStore, redis: Redis) -> None:
    engine = calls(routing, store, redis, sim=Scripted(["hang"]), other=Scripted([]))
    feature = routing.features["c"]
    job = engine.new_job("t", feature, CHAT)
    task = asyncio.create_task(engine.run(job, feature, CHAT))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stored = await store.get(job.id)
    assert stored is not None and stored.status is JobStatus.CANCELED
    assert [(a["provider"], a["outcome"]) for a in stored.attempts] == [("sim", "canceled")]


async def test_an_unexpected_failure_is_recorded_as_internal(
    routing: Routing, store: JobStore, redis: Redis, caplog: Any
) -> None:
    engine = calls(routing, store, redis, sim=Scripted([]))  # no adapter for "nowhere"
    feature = routing.features["lost"]
    job = engine.new_job("t", feature, CHAT)
    call = await engine.run(job, feature, CHAT)
    assert call.error is not None and call.error.code == "gateway_internal"
    stored = await store.get(job.id)
    assert stored is not None and stored.status is JobStatus.FAILED
    assert stored.error == {"code": "gateway_internal", "message": call.error.message}


MEDIA_PRICES = PriceBook(
    {}, {"pic": Price(per_image=0.04), "clip": Price(per_video_s=0.5), "rank": Price(per_search_unit=0.002)},
    {"USD": 1.0},
)  # fmt: skip


def blob(**extra: Any) -> dict[str, Any]:
    return {"key": "t/j/0", "content_type": "video/mp4", "bytes": 10, "sha256": "0" * 64, **extra}


@pytest.mark.parametrize(
    ("job_type", "model", "output", "reported", "expected"),
    [
        # the provider reported nothing: counted from what was stored, and marked estimated
        ("image", "pic", {"images": [blob(), blob()]}, Usage(), (2.0, True, 0.08)),
        ("video", "clip", {"videos": [blob(duration_s=4.0), blob(duration_s=6)]}, Usage(), (10.0, True, 5.0)),
        # nothing to count from: the cost is unknown, never free
        ("video", "clip", {"videos": [blob()]}, Usage(), (0.0, True, None)),
        ("speech", "clip", {"audio": blob()}, Usage(), (0.0, True, None)),
        # what the provider reported stands
        ("video", "clip", {"videos": [blob(duration_s=9.0)]}, Usage(units=5), (5.0, False, 2.5)),
        # Cohere's search_units: 0 billed nothing
        ("rerank", "rank", {"results": []}, Usage(), (0.0, False, 0.0)),
    ],
)  # fmt: skip
def test_a_record_without_reported_usage_is_estimated_or_unpriced_never_free(
    job_type: str,
    model: str,
    output: dict[str, Any],
    reported: Usage,
    expected: tuple[float, bool, float | None],
) -> None:
    attempts: list[dict[str, Any]] = [{"provider": "p", "model": model}]
    fields = priced_fields(MEDIA_PRICES, job_type, output, reported, attempts, {}, Target("p", model))
    usage = fields["usage"]
    assert (usage["units"], usage["estimated"]) == expected[:2]
    assert usage["cost_usd"] == pytest.approx(expected[2]) and attempts[-1]["cost_usd"] == usage["cost_usd"]
    assert reported.cost_usd is None and reported.units in (0, 5)  # the adapter's usage is left alone
