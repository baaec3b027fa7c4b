"""LaneWorker: arq's data model with a batched claim and a visibility timeout."""

from __future__ import annotations

import asyncio
import time
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
from aijobs.queue.leases import COUNTS_SUFFIX


@pytest.fixture
async def pool(redis_url: str) -> AsyncIterator[ArqRedis]:
    arq_pool = await create_pool(RedisSettings.from_dsn(redis_url), job_serializer=orjson.dumps)
    yield arq_pool
    await arq_pool.aclose(close_connection_pool=True)


Calls = list[tuple[str, int]]


def worker(
    pool: ArqRedis,
    lane: str,
    calls: Calls,
    *,
    lease_s: float = 10,
    block: bool = False,
    fail: bool = False,
    job_s: float = 0,
) -> LaneWorker:
    async def run_job(ctx: dict[str, Any], job_id: str) -> None:
        calls.append((job_id, ctx["job_try"]))
        if block:
            await asyncio.Event().wait()
        if job_s:  # a long job calling its upstream every 50 ms
            for _ in range(int(job_s / 0.05)):
                await asyncio.sleep(0.05)
                calls.append((job_id, -1))
        if fail:
            raise ConnectionError("redis went away mid-job")

    return LaneWorker(
        functions=[func(run_job, name=RUN_JOB)], queue_name=queue_name(lane), redis_pool=pool, max_jobs=100,
        job_timeout=60, keep_result=0, handle_signals=False, lease_s=lease_s,
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


async def test_a_claimed_job_is_invisible_to_other_workers_until_its_lease_lapses(pool: ArqRedis) -> None:
    lane, first_calls, second_calls = f"t{uuid.uuid4().hex[:8]}", Calls(), Calls()
    (job_id,) = await enqueue(pool, lane, 1)
    dying = worker(pool, lane, first_calls, lease_s=10.5, block=True)
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
    holder = await pool.get(f"arq:in-progress:{job_id}")
    assert holder == dying.leases.token.encode()  # the lease names its worker
    await pool.set(f"arq:in-progress:{job_id}", holder, px=300)  # as the dead worker left it, 0.3 s to go
    await pool.zadd(queue_name(lane), {job_id: timestamp_ms() + 300}, xx=True)
    await other._poll_iteration()
    assert second_calls == []  # not yet
    await asyncio.sleep(0.4)
    await other._poll_iteration()
    await settle(other)
    assert second_calls == [(job_id, 2)]  # delivered again, as a retry
    assert await lease_counts(pool, lane) == {"redelivered": 1}  # counted as a lapsed lease


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


async def lease_counts(pool: ArqRedis, lane: str) -> dict[str, int]:
    raw = await pool.hgetall(queue_name(lane) + COUNTS_SUFFIX)  # type: ignore[misc]
    return {key.decode(): int(value) for key, value in raw.items()}


async def poll_for(lane_worker: LaneWorker, seconds: float) -> None:
    """Run ``lane_worker``'s poll loop for ``seconds``, as its ``main`` would."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await lane_worker._poll_iteration()
        await asyncio.sleep(0.02)


async def test_a_live_worker_keeps_a_job_that_runs_past_its_lease(pool: ArqRedis) -> None:
    lane, calls, others = f"t{uuid.uuid4().hex[:8]}", Calls(), Calls()
    (job_id,) = await enqueue(pool, lane, 1)
    live = worker(pool, lane, calls, lease_s=0.3, job_s=1.2)  # four leases long
    other = worker(pool, lane, others, lease_s=0.3)
    await asyncio.gather(poll_for(live, 1.5), poll_for(other, 1.5))
    await settle(live)
    assert others == []  # never delivered twice
    assert [call for call in calls if call[1] > 0] == [(job_id, 1)]
    counts = await lease_counts(pool, lane)
    assert counts["renewed"] >= 3 and "redelivered" not in counts and "lost" not in counts
    assert await pool.zcard(queue_name(lane)) == 0


async def test_a_dead_workers_job_is_delivered_again_within_its_lease(pool: ArqRedis) -> None:
    lane, first, second = f"t{uuid.uuid4().hex[:8]}", Calls(), Calls()
    (job_id,) = await enqueue(pool, lane, 1)
    dying = worker(pool, lane, first, lease_s=0.5, block=True)
    await dying._poll_iteration()
    claimed_at = time.monotonic()
    for task in dying.tasks.values():  # it dies: no more renewals, nothing released
        task.cancel()
    await settle_cancelled(dying)
    other = worker(pool, lane, second, lease_s=0.5)
    while not second and time.monotonic() - claimed_at < 3:
        await other._poll_iteration()
        await asyncio.sleep(0.01)
    await settle(other)
    assert second == [(job_id, 2)]
    assert 0.4 < time.monotonic() - claimed_at < 0.9  # the lease, not the job timeout (60 s)
    assert await lease_counts(pool, lane) == {"redelivered": 1}


async def test_a_stalled_worker_stops_the_run_another_worker_took_over(pool: ArqRedis) -> None:
    lane, first, second = f"t{uuid.uuid4().hex[:8]}", Calls(), Calls()
    (job_id,) = await enqueue(pool, lane, 1)
    stalled = worker(pool, lane, first, lease_s=0.3, job_s=5)
    await stalled._poll_iteration()  # claimed; then its poll loop stalls and renews nothing
    await asyncio.sleep(0.4)
    taker = worker(pool, lane, second, lease_s=0.3, block=True)
    await taker._poll_iteration()
    assert second == [(job_id, 2)]  # the lapsed lease went to another worker
    await stalled._poll_iteration()  # the stalled worker renews, and learns the job is not its own
    await asyncio.sleep(0.05)
    assert not stalled.tasks  # its run was stopped...
    upstream_calls = len(first)
    await asyncio.sleep(0.2)
    assert len(first) == upstream_calls  # ...and calls upstream no more
    lock = f"arq:in-progress:{job_id}"
    assert await pool.get(lock) == taker.leases.token.encode()  # the taker's lease is untouched
    assert await pool.zscore(queue_name(lane), job_id) is not None
    assert await lease_counts(pool, lane) == {"redelivered": 1, "lost": 1}
    await taker.hand_back()


async def test_a_stale_run_that_finishes_leaves_the_new_owners_keys_alone(pool: ArqRedis) -> None:
    lane, first, second = f"t{uuid.uuid4().hex[:8]}", Calls(), Calls()
    (job_id,) = await enqueue(pool, lane, 1)
    stale = worker(pool, lane, first, lease_s=0.2, job_s=0.5)
    await stale._poll_iteration()
    await asyncio.sleep(0.25)
    taker = worker(pool, lane, second, lease_s=10, block=True)
    await taker._poll_iteration()
    await settle(stale)  # the stale run ends on its own and settles
    assert await pool.get(f"arq:in-progress:{job_id}") == taker.leases.token.encode()
    assert await pool.exists(f"arq:job:{job_id}")
    assert await pool.zscore(queue_name(lane), job_id) is not None
    await taker.hand_back()


async def test_a_stopping_worker_hands_back_every_unfinished_job_at_once(pool: ArqRedis) -> None:
    lane, calls, again = f"t{uuid.uuid4().hex[:8]}", Calls(), Calls()
    ids = await enqueue(pool, lane, 10)
    stopping = worker(pool, lane, calls, block=True)
    await stopping._poll_iteration()
    await asyncio.sleep(0)
    assert await stopping.hand_back() == 10
    now_ms = (await pool.time())[0] * 1000 + 1000
    for job_id in ids:
        assert not await pool.exists(f"arq:in-progress:{job_id}")
        score = await pool.zscore(queue_name(lane), job_id)
        assert score is not None and score <= now_ms  # due now, not when a lease would have lapsed
    assert await lease_counts(pool, lane) == {"handed_back": 10}
    next_worker = worker(pool, lane, again)
    await next_worker._poll_iteration()
    await settle(next_worker)
    assert sorted(again) == sorted((job_id, 2) for job_id in ids)
