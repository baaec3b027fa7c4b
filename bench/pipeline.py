"""(b) end-to-end chat jobs/s and (d) in-flight capacity, through real processes and Redis."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from redis.asyncio import Redis

from aijobs.keys import Keys
from aijobs.queue import delivery
from aijobs.store import JobStore
from bench import loadgen
from bench.harness import percentile
from bench.submit import submit_request


async def wait_all_succeeded(redis: Redis, ids: list[str], timeout_s: float) -> float:
    """Wait until every job succeeded; return when the last one finished (its ``finished_at``).

    Polls rarely and reads the finish time from the records, so measuring does not steal the
    CPU and Redis time it is measuring.
    """
    remaining = list(ids)
    deadline = time.time() + timeout_s
    while remaining:
        if time.time() > deadline:
            raise RuntimeError(f"{len(remaining)} jobs unfinished after {timeout_s} s")
        await asyncio.sleep(0.25)
        async with redis.pipeline(transaction=False) as pipe:
            for job_id in remaining:
                pipe.hget(Keys.job(job_id), "status")
            statuses = await pipe.execute()
        if b"failed" in statuses or b"canceled" in statuses:
            raise RuntimeError("a benchmark job did not succeed")
        remaining = [j for j, s in zip(remaining, statuses, strict=True) if s != b"succeeded"]
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hget(Keys.job(job_id), "finished_at")
        finished = await pipe.execute()
    return max(float(f) for f in finished)


async def end_to_end(
    url: str, key: str, redis_url: str, jobs: int, concurrency: int = 32, raw: bytes | None = None
) -> dict[str, Any]:
    """Submit ``jobs`` chat jobs over HTTP (closed loop) and time until all have succeeded.

    ``raw`` is the request to send, when not the plain chat job.
    """
    redis = Redis.from_url(redis_url)
    started = time.time()
    raw = raw or submit_request(url, key)
    sample, submit_s = await loadgen.closed_loop(url, raw, jobs, concurrency)
    ids = [orjson.loads(body)["id"] for body in sample.bodies]
    done = await wait_all_succeeded(redis, ids, timeout_s=120)
    await redis.aclose()
    return {
        "jobs": jobs,
        "submit_s": round(submit_s, 3),
        "submit_p50_ms": round(percentile(sample.latencies_ms, 50), 2),
        "total_s": round(done - started, 3),
        "jobs_per_s": round(jobs / (done - started), 1),
    }


CHAT_BODY = {"messages": [{"role": "user", "content": "hold on"}]}


async def in_flight(
    redis_url: str,
    jobs: int,
    feature: str = "slow-chat",
    *,
    type: str = "chat",
    lane: str = "interactive",
    body: dict[str, Any] = CHAT_BODY,
    timeout_s: float = 120,
) -> dict[str, Any]:
    """Write and enqueue ``jobs`` records straight into Redis; time until a running worker ends them all."""
    redis = Redis.from_url(redis_url, max_connections=256)
    store = JobStore(redis, job_ttl_s=3600)
    semaphore = asyncio.Semaphore(128)

    async def one() -> str:
        async with semaphore:
            created = await store.create(
                tenant="bench", type=type, feature=feature, lane=lane, input=body, metadata={},
                deliver=delivery,
            )  # fmt: skip
            return created.job.id

    started = time.time()
    ids = await asyncio.gather(*(one() for _ in range(jobs)))
    enqueued = time.time()
    done = await wait_all_succeeded(redis, list(ids), timeout_s=timeout_s)
    await redis.aclose()
    return {
        "jobs": jobs,
        "enqueue_s": round(enqueued - started, 3),
        "total_s": round(done - started, 3),
        "after_enqueue_s": round(done - enqueued, 3),
    }
