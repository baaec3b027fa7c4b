"""(f) webhooks: interactive jobs/s with and without 2,000 job webhooks to a slow receiver."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx2
import orjson

from bench import loadgen
from bench.harness import percentile
from bench.submit import BODY


def hooked_request(url: str, key: str, receiver_url: str) -> bytes:
    """``POST /v1/jobs`` of the bench's chat job, with a webhook for its ``job.succeeded``."""
    body = orjson.loads(BODY) | {"webhook": {"url": f"{receiver_url}/hook", "events": ["job.succeeded"]}}
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    return loadgen.request_bytes(url, "POST", "/v1/jobs", orjson.dumps(body), headers)


async def create_job_secret(url: str, key: str) -> None:
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}) as http:
        (await http.post(f"{url}/v1/webhooks/secret")).raise_for_status()


async def deliveries(receiver_url: str, count: int, timeout_s: float) -> dict[str, Any]:
    """Wait for ``count`` deliveries; their throughput and latency (event → received)."""
    deadline = time.time() + timeout_s
    async with httpx2.AsyncClient() as http:
        while True:
            rows: list[list[float]] = (await http.get(f"{receiver_url}/_stats")).json()
            if len(rows) >= count or time.time() > deadline:
                break
            await asyncio.sleep(0.5)
    if not rows:
        raise RuntimeError("no webhook arrived")
    latencies_ms = [(arrived - event) * 1000 for arrived, event in rows]
    first_event = min(event for _, event in rows)
    last_arrival = max(arrived for arrived, _ in rows)
    return {
        "delivered": len(rows),
        "span_s": round(last_arrival - first_event, 3),
        "deliveries_per_s": round(len(rows) / (last_arrival - first_event), 1),
        "latency_p50_ms": round(percentile(latencies_ms, 50), 1),
        "latency_p99_ms": round(percentile(latencies_ms, 99), 1),
        "latency_max_ms": round(max(latencies_ms), 1),
    }
