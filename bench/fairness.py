"""(i) Fairness: interactive chat latency while a large batch runs beside it.

Interactive traffic, one request at a time, through both interactive paths: ``POST /v1/chat/completions``
(answered by the API process) and ``POST /v1/jobs`` with ``Prefer: wait`` (run by an interactive-lane
worker). Measured idle, then again while a batch of N lines runs on its own batch-lane worker process
against the same zero-latency upstream. The issue's target: p99 during the batch within 20% of idle.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx2

from bench import batch, chat_api
from bench.harness import percentile

JOB = {"type": "chat", "feature": "bench-chat", "input": {"messages": chat_api.MESSAGES}}


async def _jobs(api: httpx2.AsyncClient, count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        answer = await api.post("/v1/jobs", json=JOB, headers={"Prefer": "wait=10"})
        latencies.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "succeeded", answer.text
    return latencies


async def _probe(api_url: str, key: str, count: int) -> dict[str, list[float]]:
    raw = chat_api.chat_request(api_url, "bench-chat", key)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx2.AsyncClient(base_url=api_url, headers=headers, timeout=30) as api:
        return {
            "chat_completions": await chat_api.one_at_a_time(api_url, raw, count),
            "jobs": await _jobs(api, count),
        }


def _summary(latencies: list[float]) -> dict[str, float]:
    return {"p50_ms": round(percentile(latencies, 50), 2), "p99_ms": round(percentile(latencies, 99), 2)}


async def measure(api_url: str, key: str, lines: int, probes: int) -> dict[str, Any]:
    idle = await _probe(api_url, key, probes)
    running = asyncio.create_task(batch.run(api_url, key, lines))
    await asyncio.sleep(1.0)  # the batch under way
    busy = await _probe(api_url, key, probes)
    assert not running.done(), "the batch finished before the probe: use more lines"
    result: dict[str, Any] = {"batch": await running, "probes": probes}
    for path in idle:
        before, during = _summary(idle[path]), _summary(busy[path])
        result[path] = {
            "idle": before, "during_batch": during,
            "p99_ratio": round(during["p99_ms"] / before["p99_ms"], 2),
        }  # fmt: skip
    return result


def run(api_url: str, key: str, lines: int, probes: int) -> dict[str, Any]:
    return asyncio.run(measure(api_url, key, lines, probes))
