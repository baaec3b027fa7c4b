"""(a) ``POST /v1/jobs`` latency at fixed offered rates (open loop: a slow server cannot slow the sender).

Latency is measured from each request's scheduled send time, so queueing in the client counts too.
"""

from __future__ import annotations

from typing import Any

import orjson

from bench import loadgen
from bench.harness import percentile

BODY = orjson.dumps(
    {"type": "chat", "input": {"messages": [{"role": "user", "content": "Where is my order?"}]}}
)


def submit_request(url: str, key: str) -> bytes:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    return loadgen.request_bytes(url, "POST", "/v1/jobs", BODY, headers)


async def offered_rate(url: str, key: str, rate_per_s: float, duration_s: float) -> dict[str, Any]:
    raw = submit_request(url, key)
    await loadgen.open_loop(url, raw, 200, 100, connections=32)  # warm up the server and Redis
    count = int(rate_per_s * duration_s)
    sample = await loadgen.open_loop(url, raw, rate_per_s, count)
    return {
        "offered_per_s": rate_per_s,
        "requests": count,
        "errors": count - sample.statuses.get(202, 0),
        "p50_ms": round(percentile(sample.latencies_ms, 50), 2),
        "p99_ms": round(percentile(sample.latencies_ms, 99), 2),
        "max_ms": round(max(sample.latencies_ms), 2),
    }
