"""Jobs on real provider kinds, end to end: API → Redis → worker → adapter → provider fake over HTTP."""

from __future__ import annotations

from datetime import datetime

import httpx2

from tests.helpers import chat, run


async def reset(llmock_url: str) -> None:
    async with httpx2.AsyncClient() as admin:
        await admin.post(llmock_url + "/_llmock/reset")


async def test_the_chinese_feature_on_deepseek_counts_tokens(
    client: httpx2.AsyncClient, llmock_url: str
) -> None:
    await reset(llmock_url)
    job = await run(client, chat("用一句话介绍你自己", feature="chinese"))
    assert job["status"] == "succeeded", job
    assert job["route"]["provider"] == "deepseek"
    assert job["route"]["model"] == "deepseek-chat"
    assert job["output"]["message"]["content"]
    assert job["usage"]["input_tokens"] > 0
    assert job["usage"]["output_tokens"] > 0
    assert job["usage"]["estimated"] is False


async def test_support_chat_on_anthropic_counts_tokens(client: httpx2.AsyncClient, llmock_url: str) -> None:
    await reset(llmock_url)
    job = await run(client, chat("Where is my order 1234?", feature="support-chat-claude"))
    assert job["status"] == "succeeded", job
    assert job["route"]["provider"] == "anthropic"
    assert job["output"]["message"]["content"]
    assert job["usage"]["output_tokens"] > 0


async def scenario(llmock_url: str, *behaviors: dict[str, object]) -> None:
    async with httpx2.AsyncClient() as admin:
        await admin.post(llmock_url + "/_llmock/reset")
        await admin.post(llmock_url + "/_llmock/scenario", json={"behaviors": list(behaviors)})


async def test_a_429_is_retried_after_retry_after_then_succeeds(
    client: httpx2.AsyncClient, llmock_url: str
) -> None:
    await scenario(llmock_url, {"type": "fail", "status": 429, "retry_after": 1, "times": 1})
    job = await run(client, chat("hello", feature="chinese"))
    assert job["status"] == "succeeded", job
    first, second = job["attempts"]
    assert (first["error_code"], first["retry_after_s"], second["outcome"]) == (
        "provider_rate_limited",
        1,
        "ok",
    )
    waited_s = (
        datetime.fromisoformat(second["started_at"]) - datetime.fromisoformat(first["started_at"])
    ).total_seconds()
    assert waited_s >= 1.0  # Retry-After honoured
    assert job["route"]["fallback_path"] == ["deepseek:deepseek-chat"]
    assert "sk-fake" not in str(job)  # the provider key never reaches a record


async def test_a_400_is_not_retried_and_fails_the_job_with_its_code(
    client: httpx2.AsyncClient, llmock_url: str
) -> None:
    await scenario(llmock_url, {"type": "fail", "status": 400, "times": 3})
    job = await run(client, chat("hello", feature="chinese"))
    assert job["status"] == "failed"
    assert job["error"]["code"] == "provider_rejected"
    assert len(job["attempts"]) == 1
