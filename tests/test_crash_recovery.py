"""Worker crashes and stops, with real processes: leases bring a killed worker's job back in seconds,
and a stopping worker hands back every unfinished job the moment it exits.

Two interactive-lane workers share the queue, with the shipped lease (10 s) and a 30 s job timeout:
before leases, a killed worker's job waited out a 50 s lock.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx2
import pytest
from redis.asyncio import Redis

from aijobs.queue import queue_name
from aijobs.routing.config import LaneConfig
from tests.conftest import ROOT, TEST_ROUTING, Service, own_db, run_service
from tests.helpers import chat, submit, wait_for

DB = 8
LONG_CHAT = """
[providers.sim.models.long]
latency_ms = 4000

[features.long-chat]
type = "chat"
route = ["sim:long"]
"""
SHIPPED_LEASE_S = LaneConfig().lease_s


@pytest.fixture(scope="module")
def service(redis_url: str, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The API (``processes[0]``) and two interactive-lane workers (``processes[1:]``)."""
    workdir = tmp_path_factory.mktemp("crashes")
    text = TEST_ROUTING.read_text() + LONG_CHAT
    env = {"AIJOBS_SHUTDOWN_GRACE_S": "0.5"}
    with run_service(
        own_db(redis_url, DB), s3_endpoint, "aijobs-test", text, workdir, env, "interactive"
    ) as svc:
        svc.processes.append(start_worker(svc, workdir))
        yield svc


def start_worker(svc: Service, workdir: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "aijobs", "worker", "--lanes", "interactive"]
    with (workdir / "workers.log").open("ab") as log:
        return subprocess.Popen(command, env=svc.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


@pytest.fixture
async def api(service: Service) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(base_url=service.url, headers=service.headers(), timeout=30) as client:
        yield client


@pytest.fixture
async def queue_redis(redis_url: str) -> AsyncIterator[Redis]:
    redis = Redis.from_url(own_db(redis_url, DB))
    yield redis
    await redis.aclose()


async def holder(redis: Redis, job_id: str) -> str | None:
    """The token of the worker holding ``job_id``'s lease (``host:pid:nonce``), if any."""
    value = await redis.get(f"arq:in-progress:{job_id}")
    return value.decode() if value else None


async def running(api: httpx2.AsyncClient, redis: Redis, job_ids: list[str]) -> dict[str, str]:
    """Wait until every job runs on a worker; each one's lease holder."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        holders = {job_id: await holder(redis, job_id) for job_id in job_ids}
        if all(holders.values()):
            return {job_id: token for job_id, token in holders.items() if token}
        await asyncio.sleep(0.02)
    raise AssertionError(f"not all of {job_ids} started")


def worker_of(service: Service, token: str) -> int:
    """Which of ``service.processes`` holds a lease with ``token``."""
    pid = int(token.split(":")[-2])
    return next(i for i, process in enumerate(service.processes) if process.pid == pid)


async def test_a_killed_workers_job_runs_again_within_the_lease(
    service: Service, api: httpx2.AsyncClient, queue_redis: Redis, tmp_path: Path
) -> None:
    job = await submit(api, chat("outlive a SIGKILL", feature="long-chat"))
    token = (await running(api, queue_redis, [job["id"]]))[job["id"]]
    index = worker_of(service, token)
    service.processes[index].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    service.processes[index].wait(timeout=10)
    while (now := await holder(queue_redis, job["id"])) in (token, None):
        assert time.monotonic() - killed_at < SHIPPED_LEASE_S + 5, "not delivered again within the lease"
        await asyncio.sleep(0.05)
    redelivered_s = time.monotonic() - killed_at
    assert now is not None and worker_of(service, now) != index  # the live worker took it over
    service.processes[index] = start_worker(service, tmp_path)
    final = await wait_for(api, job["id"], timeout_s=15)
    assert final["status"] == "succeeded", final["error"]
    assert redelivered_s <= SHIPPED_LEASE_S + 1  # not the 50 s lock of the job timeout
    metrics = (await api.get("/metrics")).text
    assert 'aijobs_lease_redeliveries_total{lane="interactive"} 1' in metrics


async def test_a_stopping_worker_hands_back_every_unfinished_job_at_once(
    service: Service, api: httpx2.AsyncClient, queue_redis: Redis, tmp_path: Path
) -> None:
    jobs = [await submit(api, chat(f"stopped midway {i}", feature="long-chat")) for i in range(10)]
    ids = [job["id"] for job in jobs]
    await running(api, queue_redis, ids)
    workers = service.processes[1:]
    for process in workers:
        process.send_signal(signal.SIGTERM)
    for process in workers:
        assert process.wait(timeout=15) == 0
    exited_ms = time.time() * 1000
    for job_id in ids:  # every job is due again the moment its worker exits
        assert await holder(queue_redis, job_id) is None, job_id
        score = await queue_redis.zscore(queue_name("interactive"), job_id)
        assert score is not None and score <= exited_ms, job_id
    service.processes[1:] = [start_worker(service, tmp_path) for _ in workers]
    finished = await asyncio.gather(*(wait_for(api, job_id, timeout_s=30) for job_id in ids))
    assert {job["status"] for job in finished} == {"succeeded"}
    metrics = (await api.get("/metrics")).text
    assert _counter(metrics, "aijobs_jobs_handed_back_total") >= 10
    assert _counter(metrics, "aijobs_lease_renewals_total") > 0  # 4 s jobs outlive a renewal period


def _counter(metrics: str, name: str) -> float:
    lines = [line for line in metrics.splitlines() if line.startswith(name + "{")]
    assert lines, f"{name} missing from /metrics"
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


def test_worker_tokens_name_their_process() -> None:
    from aijobs.queue.leases import worker_token

    host, pid, nonce = worker_token().rsplit(":", 2)
    assert host and int(pid) == os.getpid() and len(nonce) == 8
