"""Chaos: 500 chat jobs against an upstream failing 20% of calls at random (llmock, 429s and 500s).

The routing absorbs the faults (retries honouring Retry-After, fallback to the second target,
requeues), and llmock's own verdict checks how it did so: no Retry-After ignored, no retry of an
error that cannot succeed, no retry storm.
"""

from __future__ import annotations

import asyncio

import httpx2

from tests.helpers import chat, submit, wait_for

JOBS = 500


async def test_routing_keeps_99_percent_of_jobs_alive_under_random_faults(
    client: httpx2.AsyncClient, chaos_llmock_url: str
) -> None:
    async with httpx2.AsyncClient() as admin:
        await admin.post(chaos_llmock_url + "/_llmock/reset")
    # Distinct prompts: llmock tells a retry from a new call by the request body.
    submitted = await asyncio.gather(
        *(submit(client, chat(f"chaos {i}", feature="chaos-chat")) for i in range(JOBS))
    )
    finished = await asyncio.gather(*(wait_for(client, job["id"], timeout_s=90) for job in submitted))
    succeeded = sum(job["status"] == "succeeded" for job in finished)
    assert succeeded >= 0.99 * JOBS, [job["error"] for job in finished if job["status"] != "succeeded"][:5]
    async with httpx2.AsyncClient() as admin:
        verdict = (await admin.get(chaos_llmock_url + "/_llmock/verdict")).json()
        report = (await admin.get(chaos_llmock_url + "/_llmock/verdict", params={"format": "text"})).text
    assert verdict["faults_injected"] > 0.1 * JOBS  # the faults really happened
    codes = {finding["code"] for finding in verdict["findings"]}
    assert not codes & {"retry_after_ignored", "retried_non_retryable", "retry_storm"}, report
    assert verdict["passed"], report
