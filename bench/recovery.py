"""(j) Crash recovery: how soon a SIGKILLed worker's job runs again, with the shipped lane settings.

Two interactive-lane workers (job timeout 120 s, lease 10 s) share the queue. Each round submits a
5 s chat job, waits until a worker holds its lease, SIGKILLs that worker and times how long until the
other worker holds the job (its run started again); the killed worker is started again before the
next round. After the last round every job must succeed. Before leases a killed worker's job
waited out its lock: 140 s with these settings.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from typing import Any

import httpx2
from redis.asyncio import Redis

from bench import harness
from bench.harness import percentile

JOB = {"type": "chat", "feature": "crash-chat", "input": {"messages": [{"role": "user", "content": "hi"}]}}
RESTART_S = 2.0  # a restarted worker imports, connects and polls within this


async def _holder(redis: Redis, job_id: str) -> str | None:
    value = await redis.get(f"arq:in-progress:{job_id}")
    return value.decode() if value else None


async def _until_held(redis: Redis, job_id: str, not_by: str | None, timeout_s: float) -> tuple[str, float]:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        token = await _holder(redis, job_id)
        if token is not None and token != not_by:
            return token, time.monotonic() - started
        await asyncio.sleep(0.02)
    raise RuntimeError(f"job {job_id} was not held within {timeout_s} s")


async def _round(
    api: httpx2.AsyncClient, redis: Redis, workers: list[subprocess.Popen[bytes]], env: dict[str, str]
) -> tuple[str, float]:
    answer = await api.post("/v1/jobs", json=JOB)
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]
    token, _ = await _until_held(redis, job_id, None, 30)
    pid = int(token.split(":")[-2])
    index = next(i for i, worker in enumerate(workers) if worker.pid == pid)
    workers[index].send_signal(signal.SIGKILL)
    workers[index].wait()
    _, recovered_s = await _until_held(redis, job_id, token, 180)
    workers[index] = harness.spawn(["worker", "--lanes", "interactive"], env)
    await asyncio.sleep(RESTART_S)
    return job_id, recovered_s


async def _finished(api: httpx2.AsyncClient, job_ids: list[str], timeout_s: float = 60) -> int:
    deadline = time.monotonic() + timeout_s
    pending = set(job_ids)
    succeeded = 0
    while pending and time.monotonic() < deadline:
        for job_id in list(pending):
            status = (await api.get(f"/v1/jobs/{job_id}")).json()["status"]
            if status in ("succeeded", "failed", "canceled"):
                pending.discard(job_id)
                succeeded += status == "succeeded"
        await asyncio.sleep(0.2)
    return succeeded


async def run(api_url: str, key: str, redis_url: str, env: dict[str, str], kills: int) -> dict[str, Any]:
    workers = [harness.spawn(["worker", "--lanes", "interactive"], env) for _ in range(2)]
    redis = Redis.from_url(redis_url)
    headers = {"Authorization": f"Bearer {key}"}
    try:
        async with httpx2.AsyncClient(base_url=api_url, headers=headers, timeout=30) as api:
            await asyncio.sleep(RESTART_S)
            rounds = [await _round(api, redis, workers, env) for _ in range(kills)]
            succeeded = await _finished(api, [job_id for job_id, _ in rounds])
    finally:
        await redis.aclose()
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=30)
    recovered = [seconds for _, seconds in rounds]
    return {
        "kills": kills,
        "recovered_p50_s": round(percentile(recovered, 50), 2),
        "recovered_p99_s": round(percentile(recovered, 99), 2),
        "recovered_max_s": round(max(recovered), 2),
        "succeeded": succeeded,
    }
