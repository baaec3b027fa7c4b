"""(c) raw arq: no-op jobs per second drained by one worker process on the same Redis.

``python -m bench.arq_noop REDIS_URL QUEUE`` runs the worker (burst mode) and prints its drain time.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import orjson
from arq import Worker
from arq.connections import RedisSettings, create_pool

from aijobs.routing.config import LaneConfig


async def noop(ctx: dict[str, Any], job_id: str) -> None:
    return None


async def enqueue(redis_url: str, queue: str, jobs: int) -> None:
    pool = await create_pool(RedisSettings.from_dsn(redis_url), job_serializer=orjson.dumps)
    for start in range(0, jobs, 500):
        batch = range(start, min(jobs, start + 500))
        await asyncio.gather(*(pool.enqueue_job("noop", str(i), _queue_name=queue) for i in batch))
    await pool.aclose(close_connection_pool=True)


async def drain(redis_url: str, queue: str, lane: LaneConfig) -> float:
    worker = Worker(
        functions=[noop], queue_name=queue, redis_settings=RedisSettings.from_dsn(redis_url), burst=True,
        max_jobs=lane.max_jobs, poll_delay=lane.poll_delay_s, keep_result=0, handle_signals=False,
        job_serializer=orjson.dumps, job_deserializer=orjson.loads, log_results=False,
    )  # fmt: skip
    started = time.perf_counter()
    await worker.main()
    elapsed = time.perf_counter() - started
    await worker.close()
    return elapsed


if __name__ == "__main__":
    import uvloop

    from aijobs.routing.config import load_routing
    from bench.harness import ROUTING

    lane_config = load_routing(ROUTING).lane("interactive")
    print(uvloop.run(drain(sys.argv[1], sys.argv[2], lane_config)))
