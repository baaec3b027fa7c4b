"""LaneWorker: arq's data model with a batched claim and a visibility timeout."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.utils import timestamp_ms
from arq.worker import func

from aijobs.queue import RUN_JOB, JobQueue, queue_name
from aijobs.queue.lanes import LaneWorker


@pytest.fixture
async def pool(redis_url: str) -> AsyncIterator[ArqRedis]:
    arq_pool = await create_pool(RedisSettings.from_dsn(redis_url), job_serializer=orjson.dumps)
    yield arq_pool
    await arq_pool.aclose(close_connection_pool=True)


Calls = list[tuple[str, int]]


def worker(
    pool: ArqRedis, lane: str, calls: Calls, *, lock_s: float = 30, block: bool = False, fail: bool = False
) -> LaneWorker:
    async def run_job(ctx: dict[str, Any], job_id: str) -> None:
        calls.append((job_id, ctx["job_try"]))
        if block:
            await asyncio.Event().wait()
        if fail:
            raise ConnectionError("redis went away mid-job")

    return LaneWorker(
        functions=[func(run_job, name=RUN_JOB)], queue_name=queue_name(lane), redis_pool=pool, max_jobs=100,
        job_timeout=lock_s - 10, keep_result=0, handle_signals=False,
        job_serializer=orjson.dumps, job_deserializer=orjson.loads,
    )  # fmt: skip


async def settle(lane_worker: LaneWorker) -> None:
    await asyncio.gather(*lane_worker.tasks.values())
    if lane_worker._settling is not None:
        await lane_worker._settling


async def enqueue(pool: ArqRedis, lane: str, count: int) -> list[str]:
    queue = JobQueue(pool)
    ids = [f"job_{uuid.uuid4().hex}" for _ in range(count)]
    for job_id in ids:
        assert await queue.enqueue(job_id, lane)
    return ids


async def test_one_claim_starts_a_batch_and_finished_jobs_leave_no_arq_keys(pool: ArqRedis) -> None:
    lane, calls = f"t{uuid.uuid4().hex[:8]}", Calls()
    ids = await enqueue(pool, lane, 50)
    lane_worker = worker(pool, lane, calls)
    await lane_worker._poll_iteration()
    await settle(lane_worker)
    assert sorted(calls) == sorted((job_id, 1) for job_id in ids)
    assert await pool.zcard(queue_name(lane)) == 0
    for job_id in ids[:5]:
        assert not await pool.exists(f"arq:job:{job_id}", f"arq:in-progress:{job_id}", f"arq:retry:{job_id}")


async def test_a_claimed_job_is_invisible_to_other_workers_until_its_lock_lapses(pool: ArqRedis) -> None:
    lane, first_calls, second_calls = f"t{uuid.uuid4().hex[:8]}", Calls(), Calls()
    (job_id,) = await enqueue(pool, lane, 1)
    dying = worker(pool, lane, first_calls, lock_s=10.5, block=True)  # a 0.5 s job timeout: 10.5 s lock
    await dying._poll_iteration()
    assert first_calls == [(job_id, 1)]
    score = await pool.zscore(queue_name(lane), job_id)
    assert score is not None and score > (await pool.time())[0] * 1000 + 5_000  # moved into the future
    lock_ms = await pool.pttl(f"arq:in-progress:{job_id}")
    assert abs((score - timestamp_ms()) - lock_ms) < 100  # the score comes due as the lock lapses
    other = worker(pool, lane, second_calls)
    await other._poll_iteration()
    assert second_calls == []  # invisible while claimed
    assert not await JobQueue(pool).enqueue(job_id, lane)  # and arq still dedups on its id
    # The first worker dies: its task is gone, and the lock and the score lapse together.
    for task in dying.tasks.values():
        task.cancel()
    await settle_cancelled(dying)
    await pool.set(f"arq:in-progress:{job_id}", b"1", px=300)  # as the dead worker left it, 0.3 s to go
    await pool.zadd(queue_name(lane), {job_id: timestamp_ms() + 300}, xx=True)
    await other._poll_iteration()
    assert second_calls == []  # not yet
    await asyncio.sleep(0.4)
    await other._poll_iteration()
    await settle(other)
    assert second_calls == [(job_id, 2)]  # delivered again, as a retry


async def settle_cancelled(lane_worker: LaneWorker) -> None:
    """Let cancelled tasks finish without releasing: a dead worker releases nothing."""
    lane_worker._release = _noop  # type: ignore[method-assign]
    await asyncio.gather(*lane_worker.tasks.values(), return_exceptions=True)


async def _noop(job_id: str, delay_ms: int = 0, uncount: bool = False) -> None:
    return None


async def test_a_job_interrupted_by_shutdown_is_released_at_once(pool: ArqRedis) -> None:
    lane, calls = f"t{uuid.uuid4().hex[:8]}", Calls()
    (job_id,) = await enqueue(pool, lane, 1)
    lane_worker = worker(pool, lane, calls, block=True)
    await lane_worker._poll_iteration()
    await asyncio.sleep(0)
    for task in list(lane_worker.tasks.values()):
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert not await pool.exists(f"arq:in-progress:{job_id}")
    score = await pool.zscore(queue_name(lane), job_id)
    assert score is not None and score <= (await pool.time())[0] * 1000 + 1000
    again: list[tuple[str, int]] = []
    next_worker = worker(pool, lane, again)
    await next_worker._poll_iteration()
    await settle(next_worker)
    assert again == [(job_id, 2)]


async def test_a_job_whose_payload_expired_is_cleared_without_running(pool: ArqRedis) -> None:
    lane, calls = f"t{uuid.uuid4().hex[:8]}", Calls()
    (job_id,) = await enqueue(pool, lane, 1)
    await pool.delete(f"arq:job:{job_id}")
    lane_worker = worker(pool, lane, calls)
    await lane_worker._poll_iteration()
    await settle(lane_worker)
    assert calls == []
    assert await pool.zcard(queue_name(lane)) == 0


async def test_a_job_for_an_unknown_function_is_dropped_not_left_claimed(pool: ArqRedis) -> None:
    lane, calls = f"t{uuid.uuid4().hex[:8]}", Calls()
    await pool.enqueue_job("no_such_function", "x", _queue_name=queue_name(lane))
    lane_worker = worker(pool, lane, calls)
    await lane_worker._poll_iteration()
    await settle(lane_worker)
    assert calls == []
    assert await pool.zcard(queue_name(lane)) == 0


async def test_a_job_whose_task_fails_is_released_for_another_delivery(pool: ArqRedis) -> None:
    lane, calls = f"t{uuid.uuid4().hex[:8]}", Calls()
    (job_id,) = await enqueue(pool, lane, 1)
    failing = worker(pool, lane, calls, fail=True)
    await failing._poll_iteration()
    await asyncio.gather(*failing.tasks.values())
    assert await pool.exists(f"arq:job:{job_id}")  # not settled: the job is still owed a run
    assert not await pool.exists(f"arq:in-progress:{job_id}")
    healthy = worker(pool, lane, calls)
    await healthy._poll_iteration()
    await settle(healthy)
    assert calls == [(job_id, 1), (job_id, 2)]


async def test_polling_survives_redis_going_away(monkeypatch: pytest.MonkeyPatch) -> None:
    import aijobs.queue.lanes as lanes
    from aijobs.embedded_redis import free_port

    monkeypatch.setattr(lanes, "POLL_BACKOFF_S", 0.01)
    dead = ArqRedis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2)
    lane_worker = worker(dead, "nowhere", Calls())
    await lane_worker._poll_iteration()  # logs and backs off instead of raising
    await dead.aclose()
