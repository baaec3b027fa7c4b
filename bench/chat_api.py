"""(g) The OpenAI-compatible surface against a zero-latency upstream (:mod:`bench.openai_fake`).

- added latency: the same chat request one at a time, straight to the fake and through aijobs
  (``/v1/chat/completions``: auth, routing, the upstream call, the job record and ledger entry);
- throughput: non-streamed completions per second at concurrency 32 (the load generator, the API
  process and the fake share this machine's cores);
- streaming: time to the first ``data:`` bytes, straight and through aijobs;
- the floor (:mod:`bench.chat_floor`): the same two numbers for a bare forwarder on the same stack,
  so the report separates what aijobs adds from what one more hop in Python costs.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from bench import loadgen
from bench.harness import percentile

MESSAGES = [{"role": "user", "content": "Say hello in five words."}]


def chat_request(url: str, model: str, key: str | None, stream: bool = False) -> bytes:
    body = orjson.dumps({"model": model, "messages": MESSAGES, "stream": stream})
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return loadgen.request_bytes(url, "POST", "/v1/chat/completions", body, headers)


async def one_at_a_time(url: str, raw: bytes, count: int) -> list[float]:
    connection = await loadgen.Connection.open(url)
    latencies = []
    try:
        for _ in range(count):
            started = time.perf_counter()
            status, _ = await connection.send(raw)
            latencies.append((time.perf_counter() - started) * 1000)
            assert status == 200, status
    finally:
        connection.close()
    return latencies


async def first_bytes(url: str, raw: bytes, count: int) -> list[float]:
    """Time to the first ``data:`` of a streamed answer, then read it to ``[DONE]`` (new connection each)."""
    latencies = []
    for _ in range(count):
        connection = await loadgen.Connection.open(url)
        try:
            started = time.perf_counter()
            connection.writer.write(raw)
            seen = await connection.reader.readuntil(b"data:")
            latencies.append((time.perf_counter() - started) * 1000)
            assert b" 200 " in seen[:16], seen[:64]
            await connection.reader.readuntil(b"[DONE]")
        finally:
            connection.close()
    return latencies


def _summary(latencies: list[float]) -> dict[str, float]:
    return {"p50_ms": round(percentile(latencies, 50), 3), "p99_ms": round(percentile(latencies, 99), 3)}


async def measure(api_url: str, upstream_url: str, floor_url: str, key: str, requests: int) -> dict[str, Any]:
    direct, via = chat_request(upstream_url, "gpt-4o-mini", None), chat_request(api_url, "bench-chat", key)
    bare = chat_request(floor_url, "gpt-4o-mini", None)
    await one_at_a_time(api_url, via, 200)  # warm: connections, caches, breaker state
    await one_at_a_time(upstream_url, direct, 200)
    await one_at_a_time(floor_url, bare, 200)
    straight, through, floor = [], [], []
    for _ in range(5):  # interleaved rounds, so drift on a noisy machine hits all alike
        straight += await one_at_a_time(upstream_url, direct, requests // 5)
        through += await one_at_a_time(api_url, via, requests // 5)
        floor += await one_at_a_time(floor_url, bare, requests // 5)
    sample, elapsed_s = await loadgen.closed_loop(api_url, via, requests * 2, 32)
    floor_sample, floor_elapsed_s = await loadgen.closed_loop(floor_url, bare, requests * 2, 32)
    errors = sum(n for status, n in sample.statuses.items() if status != 200)
    stream_direct = chat_request(upstream_url, "gpt-4o-mini", None, stream=True)
    stream_via = chat_request(api_url, "bench-chat", key, stream=True)
    ttfb_straight, ttfb_through = [], []
    for _ in range(5):
        ttfb_straight += await first_bytes(upstream_url, stream_direct, requests // 20)
        ttfb_through += await first_bytes(api_url, stream_via, requests // 20)
    s, t, f = _summary(straight), _summary(through), _summary(floor)
    fs, ft = _summary(ttfb_straight), _summary(ttfb_through)
    return {
        "requests": requests,
        "direct": s,
        "via_aijobs": t,
        "added_p50_ms": round(t["p50_ms"] - s["p50_ms"], 3),
        "added_p99_ms": round(t["p99_ms"] - s["p99_ms"], 3),
        "concurrency": 32,
        "completions": len(sample.latencies_ms),
        "completions_per_s": round(len(sample.latencies_ms) / elapsed_s, 1),
        "loaded": _summary(sample.latencies_ms),
        "errors": errors,
        "ttfb_direct": fs,
        "ttfb_via_aijobs": ft,
        "ttfb_added_p50_ms": round(ft["p50_ms"] - fs["p50_ms"], 3),
        "ttfb_added_p99_ms": round(ft["p99_ms"] - fs["p99_ms"], 3),
        "floor_added_p50_ms": round(f["p50_ms"] - s["p50_ms"], 3),
        "floor_added_p99_ms": round(f["p99_ms"] - s["p99_ms"], 3),
        "floor_completions_per_s": round(len(floor_sample.latencies_ms) / floor_elapsed_s, 1),
    }


def run(api_url: str, upstream_url: str, floor_url: str, key: str, requests: int) -> dict[str, Any]:
    return asyncio.run(measure(api_url, upstream_url, floor_url, key, requests))
