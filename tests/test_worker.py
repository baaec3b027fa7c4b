"""The worker's job run against real Redis and a local blob store: claim, cancel, crash, recovery."""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import pytest
from arq.worker import Retry
from redis.asyncio import Redis

from aijobs import ledger
from aijobs.files import Files
from aijobs.jobs import JobStatus
from aijobs.outbound import Guard
from aijobs.providers.registry import build_adapters
from aijobs.queue import JobQueue, delivery, queue_name
from aijobs.routing import load_policy
from aijobs.routing.budgets import Budgets
from aijobs.routing.quotas import Quota, Quotas
from aijobs.routing.router import Router
from aijobs.settings import Settings
from aijobs.storage import BlobNotFound, LocalStore
from aijobs.store import JobStore
from aijobs.worker import Runtime
from tests.conftest import SECRET, TEST_ROUTING


@pytest.fixture
async def runtime(redis_url: str, tmp_path: Path) -> AsyncIterator[Runtime]:
    settings = Settings(REDIS_URL=redis_url, routing_file=TEST_ROUTING, blob_dir=tmp_path)
    routing = load_policy(TEST_ROUTING, dict(os.environ))
    redis = Redis.from_url(redis_url)
    http = httpx2.AsyncClient()
    blobs = LocalStore(tmp_path, "http://127.0.0.1:1", SECRET.encode())
    queue = await JobQueue.connect(redis_url)
    adapters = build_adapters(routing, http, {})
    router = Router(adapters)
    budgets = Budgets(redis)
    store = JobStore(redis, 600)
    files = Files(redis, blobs, 600)
    runtime = Runtime(
        settings, routing, redis, store, queue, blobs, http, router, budgets, adapters, files, Guard()
    )
    yield runtime
    await runtime.close()


async def new_job(
    runtime: Runtime, feature: str = "support-chat", type: str = "chat", **input: object
) -> str:
    feature_obj = runtime.routing.features[feature]
    body = input or {"messages": [{"role": "user", "content": "hello"}]}
    created = await runtime.store.create(
        tenant=f"t{uuid.uuid4().hex[:8]}",
        type=type,
        feature=feature,
        lane=feature_obj.lane,
        input=body,
        metadata={},
    )
    return created.job.id


async def test_a_job_canceled_while_queued_never_runs(runtime: Runtime) -> None:
    job_id = await new_job(runtime)
    assert (await runtime.store.transition(job_id, JobStatus.CANCELED)).ok
    await runtime.process(job_id)
    job = await runtime.store.get(job_id)
    assert job is not None and job.status is JobStatus.CANCELED
    assert job.output is None and job.runs == 0


async def test_a_result_finished_after_cancel_is_discarded_with_its_blobs(
    runtime: Runtime, tmp_path: Path
) -> None:
    job_id = await new_job(runtime, "images", "image", prompt="p", size="64x64")
    original = runtime.router.run

    async def run_then_cancel(feature, request, targets=None, stream=None, attempts=None, quota=False):  # type: ignore[no-untyped-def]
        outcome = await original(feature, request, targets, stream, attempts, quota)
        await runtime.store.transition(job_id, JobStatus.CANCELED)  # the user cancels mid-flight
        return outcome

    runtime.router.run = run_then_cancel  # type: ignore[method-assign]
    await runtime.process(job_id)
    job = await runtime.store.get(job_id)
    assert job is not None and job.status is JobStatus.CANCELED and job.output is None
    with pytest.raises(BlobNotFound):
        await runtime.blobs.stat(f"{job.tenant}/{job_id}/0.png")


async def test_a_rerun_after_a_crash_takes_over_the_running_record(runtime: Runtime) -> None:
    job_id = await new_job(runtime)
    await runtime.store.transition(job_id, JobStatus.RUNNING)  # a worker claimed it, then died
    await runtime.process(job_id, job_try=1)  # a duplicate delivery must not run it
    assert (await runtime.store.get(job_id)).status is JobStatus.RUNNING  # type: ignore[union-attr]
    await runtime.process(job_id, job_try=2)  # arq's retry after the lock expired does
    job = await runtime.store.get(job_id)
    assert job is not None and job.status is JobStatus.SUCCEEDED and job.runs == 2


async def test_the_deadline_fails_a_job_that_takes_too_long(runtime: Runtime) -> None:
    job_id = await new_job(runtime, "deadline-chat")
    await runtime.process(job_id)
    job = await runtime.store.get(job_id)
    assert job is not None and job.status is JobStatus.FAILED
    assert job.error == {
        "code": "gateway_deadline_exceeded",
        "message": "the job did not finish within its 0.2 s deadline",
    }


async def test_recovery_re_enqueues_only_jobs_arq_no_longer_holds(runtime: Runtime, redis: Redis) -> None:
    stranded = await new_job(runtime, "background")  # as if arq's payload expired with no worker around
    created = await runtime.store.create(
        tenant="t", type="chat", feature="background", lane="batch", input={}, metadata={}, deliver=delivery
    )
    delivered = created.job.id
    payload_before = await redis.get(f"arq:job:{delivered}")
    await asyncio.sleep(0.01)
    await runtime.recover(["interactive"], older_than_s=0)  # a lane neither job is on
    assert await redis.zscore(queue_name("interactive"), stranded) is None
    await runtime.recover(["batch"], older_than_s=0)
    assert await redis.zscore(queue_name("batch"), stranded) is not None
    assert await redis.get(f"arq:job:{delivered}") == payload_before  # held by arq: left alone
    assert await runtime.queue.waiting([stranded, delivered]) == {stranded, delivered}
    for job_id in (stranded, delivered):
        await runtime.queue.discard(job_id, "batch")


async def test_a_job_that_keeps_killing_its_worker_is_failed_not_retried_forever(runtime: Runtime) -> None:
    from aijobs.worker import MAX_DELIVERIES

    job_id = await new_job(runtime)
    await runtime.store.transition(job_id, JobStatus.RUNNING)
    await runtime.process(job_id, job_try=MAX_DELIVERIES + 1)
    job = await runtime.store.get(job_id)
    assert job is not None
    assert job.status is JobStatus.FAILED
    assert job.error is not None
    assert job.error["code"] == "gateway_internal"
    assert f"delivered {MAX_DELIVERIES + 1} times" in job.error["message"]


async def test_finished_days_are_exported_once_and_today_is_not(runtime: Runtime, tmp_path: Path) -> None:
    from aijobs.keys import Keys

    redis = runtime.redis
    today, yesterday, older = "2030-05-10", "2030-05-09", "2030-05-08"
    for day in (today, yesterday, older):
        await redis.delete(Keys.ledger_exported(day), Keys.ledger_exported(day) + ":lock")
        await redis.xadd(Keys.ledger(day), {"r": b'{"record": "job", "id": "job_' + day.encode() + b'"}'})
    assert await runtime.export_ledger(today=today) == [older, yesterday]
    assert (tmp_path / "ledger" / f"{yesterday}.jsonl").read_bytes().startswith(b'{"record":"job"')
    assert not (tmp_path / "ledger" / f"{today}.jsonl").exists()  # the day is not over
    assert await runtime.export_ledger(today=today) == []  # done, and marked so


async def test_the_worker_requeues_a_line_whose_share_is_spent_without_spending_a_requeue(
    runtime: Runtime,
) -> None:
    minute = 3e9 + random.randrange(10**6) * 60  # a minute of this test's own
    runtime.router.quotas = Quotas(runtime.redis, {"sim": Quota(rpm=1)}, clock=lambda: minute + 30)
    first, second = await new_job(runtime, "background"), await new_job(runtime, "background")
    await runtime.process(first)
    with pytest.raises(Retry) as retry:
        await runtime.process(second)
    assert retry.value.defer_score is not None and 30_000 <= retry.value.defer_score <= 31_000
    done, waiting = await runtime.store.get(first), await runtime.store.get(second)
    assert done is not None and done.status is JobStatus.SUCCEEDED
    assert waiting is not None and waiting.status is JobStatus.QUEUED and waiting.requeues == 0
    runtime.router.quotas = Quotas(runtime.redis, {"sim": Quota(rpm=1)}, clock=lambda: minute + 90)
    await runtime.process(second)  # the next minute
    again = await runtime.store.get(second)
    assert again is not None and again.status is JobStatus.SUCCEEDED


async def test_a_failed_job_keeps_the_route_it_tried(runtime: Runtime) -> None:
    job_id = await new_job(runtime, "broken-chat")
    await runtime.process(job_id)
    job = await runtime.store.get(job_id)
    assert job is not None and job.status is JobStatus.FAILED
    assert job.route == {"provider": "sim", "model": "flaky", "fallback_path": ["sim:flaky"]}


def test_the_route_tried_lists_each_target_once_in_order() -> None:
    attempts = [
        {"provider": "a", "model": "m", "outcome": "error"},
        {"provider": "a", "model": "m", "outcome": "error"},
        {"provider": "b", "model": "n", "outcome": "error"},
    ]
    assert ledger.route_tried(attempts) == {"provider": "b", "model": "n", "fallback_path": ["a:m", "b:n"]}
    assert ledger.route_tried([]) is None
