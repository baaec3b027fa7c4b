"""Costs, budgets, requeues, usage, provider health and metrics, through the running service."""

from __future__ import annotations

import asyncio
import time

import httpx2
import orjson
from redis.asyncio import Redis

from aijobs.keys import Keys
from aijobs.ledger import day_of
from tests.conftest import Service
from tests.helpers import chat, run


async def usage_of(client: httpx2.AsyncClient, feature: str) -> dict[str, object]:
    response = await client.get("/v1/usage", params={"group_by": "feature"})
    assert response.status_code == 200, response.text
    rows: dict[str, dict[str, object]] = {row["key"]: row for row in response.json()["data"]}
    return rows.get(feature, {"jobs": 0, "cost_usd": 0.0, "succeeded": 0, "failed": 0})


async def test_a_job_carries_its_estimated_cost_and_lands_in_usage(client: httpx2.AsyncClient) -> None:
    before = await usage_of(client, "support-chat")
    job = await run(client, chat("what does it cost?", feature="support-chat"))
    assert job["status"] == "succeeded"
    usage = job["usage"]
    # sim:fast is priced at $1 / $2 per million tokens in tests/routing.test.toml
    expected = (usage["input_tokens"] * 1.0 + usage["output_tokens"] * 2.0) / 1_000_000
    assert usage["cost_usd"] == round(expected, 10) and usage["cost_usd"] > 0
    assert job["attempts"][-1]["cost_usd"] == usage["cost_usd"]
    after = await usage_of(client, "support-chat")
    assert after["jobs"] == before["jobs"] + 1  # type: ignore[operator]
    assert after["cost_usd"] > before["cost_usd"]  # type: ignore[operator]
    assert after["latency_p50_ms"] is not None


async def test_usage_rejects_bad_parameters_by_name(client: httpx2.AsyncClient) -> None:
    for params, param in (({"group_by": "colour"}, "group_by"), ({"since": "yesterday"}, "since"),
                          ({"since": "2026-02-02", "until": "2026-02-01"}, "since")):  # fmt: skip
        response = await client.get("/v1/usage", params=params)
        assert response.status_code == 422 and response.json()["error"]["param"] == param


async def test_usage_is_scoped_to_the_callers_tenant(client: httpx2.AsyncClient, service: Service) -> None:
    await run(client, chat("mine", feature="support-chat"))
    async with httpx2.AsyncClient(base_url=service.url, headers=service.headers(service.other_key)) as other:
        response = await other.get("/v1/usage", params={"group_by": "tenant"})
    assert [row["key"] for row in response.json()["data"]] in ([], ["globex"])


async def test_over_budget_jobs_are_downgraded(client: httpx2.AsyncClient) -> None:
    first = await run(client, chat("spend it all", feature="budget-chat"))
    assert first["status"] == "succeeded"
    await asyncio.sleep(0.3)  # workers re-read a feature's spend every 0.1 s here
    second = await run(client, chat("and now?", feature="budget-chat"))
    assert second["status"] == "succeeded" and second["route"]["provider"] == "backup"


async def test_over_budget_jobs_are_rejected_when_the_feature_says_so(client: httpx2.AsyncClient) -> None:
    await run(client, chat("spend it all", feature="capped-chat"))
    await asyncio.sleep(0.3)
    job = await run(client, chat("and now?", feature="capped-chat"))
    assert job["status"] == "failed" and job["error"]["code"] == "gateway_budget_exceeded"
    assert job["attempts"] == []  # nothing was called


async def test_a_job_whose_targets_fail_transiently_is_requeued_then_fails(
    client: httpx2.AsyncClient,
) -> None:
    started = time.monotonic()
    job = await run(client, chat("keep trying", feature="requeue-chat"))
    assert job["status"] == "failed" and job["error"]["code"] == "provider_unavailable"
    assert job["requeues"] == 2 and len(job["attempts"]) == 3  # one attempt per run, three runs
    assert time.monotonic() - started >= 0.2 + 0.4  # the delays double


async def test_providers_show_each_targets_breaker(client: httpx2.AsyncClient) -> None:
    await run(client, chat("hello", feature="support-chat"))
    await asyncio.sleep(0.3)  # healthy calls reach the window in the worker's next batched write (0.2 s)
    response = await client.get("/v1/providers")
    assert response.status_code == 200
    targets = {row["target"]: row for row in response.json()["data"]}
    assert targets["sim:fast"]["state"] == "closed" and targets["sim:fast"]["window_calls"] >= 1
    assert "backup:fast" in targets  # the budget downgrade target is watched too


async def test_metrics_expose_jobs_latency_cost_queues_and_breakers(client: httpx2.AsyncClient) -> None:
    await run(client, chat("count me", feature="support-chat"))
    text = (await client.get("/metrics")).text
    assert "# TYPE aijobs_jobs_total counter" in text
    assert (
        'aijobs_jobs_total{type="chat",feature="support-chat",provider="sim",model="fast",status="succeeded"}'
        in text
    )
    assert 'aijobs_job_duration_seconds_bucket{feature="support-chat",le="+Inf"}' in text
    assert 'aijobs_cost_usd_total{feature="support-chat",provider="sim",model="fast"}' in text
    assert (
        'aijobs_queue_depth{lane="interactive"}' in text
        and 'aijobs_jobs_in_flight{lane="interactive"}' in text
    )
    assert 'aijobs_breaker_state{provider="sim",model="fast"} 0' in text
    assert "acme" not in text  # tenants are never labels


async def test_a_slow_first_token_moves_the_job_on_and_ttft_is_recorded(
    client: httpx2.AsyncClient,
    llmock_url: str,
    service: Service,
) -> None:
    async with httpx2.AsyncClient(base_url=llmock_url) as admin:
        await admin.post("/_llmock/reset")
        slow = {"type": "slow_first_token", "seconds": 2, "times": 1, "match": {"model": "deepseek-chat"}}
        await admin.post("/_llmock/scenario", json={"behaviors": [slow]})
    job = await run(client, chat("stream it", feature="streamed-chat"))
    assert job["status"] == "succeeded" and job["route"]["provider"] == "anthropic"
    first, second = job["attempts"]
    assert first["error_code"] == "provider_timeout" and first["latency_ms"] < 1500
    assert second["ttft_ms"] is not None and second["ttft_ms"] <= second["latency_ms"]
    redis = Redis.from_url(service.env["REDIS_URL"])
    try:
        rows = await redis.xrevrange(Keys.ledger(day_of(time.time())), count=50)
    finally:
        await redis.aclose()
    record = next(orjson.loads(f[b"r"]) for _, f in rows if orjson.loads(f[b"r"])["id"] == job["id"])
    assert record["ttft_ms"] == second["ttft_ms"] and record["fallbacks"] == 1
    assert [step["target"] for step in record["fallback_path"]] == [
        "deepseek:deepseek-chat", "anthropic:claude-sonnet-4-5",
    ]  # fmt: skip
