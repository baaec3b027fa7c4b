"""Small helpers for tests that drive the service over HTTP."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx2

TERMINAL = {"succeeded", "failed", "canceled"}


async def submit(client: httpx2.AsyncClient, body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    response = await client.post("/v1/jobs", json=body, **kwargs)
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


async def wait_for(client: httpx2.AsyncClient, job_id: str, timeout_s: float = 20) -> dict[str, Any]:
    """Poll until the job is terminal; fail the test if it takes longer than ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = await client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        if job["status"] in TERMINAL:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']} after {timeout_s} s"
        await asyncio.sleep(0.05)


async def run(client: httpx2.AsyncClient, body: dict[str, Any], timeout_s: float = 20) -> dict[str, Any]:
    job = await submit(client, body)
    return await wait_for(client, job["id"], timeout_s)


def chat(text: str, feature: str | None = None, **input_fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "chat",
        "input": {"messages": [{"role": "user", "content": text}], **input_fields},
    }
    if feature:
        body["feature"] = feature
    return body
