"""Enqueueing over arq, one queue per lane. This package is the only code that imports arq.

arq carries nothing but job ids (JSON-serialised): the record in :mod:`aijobs.store` is the truth
and arq is the delivery. Enqueueing uses the job id as arq's job id, so enqueueing the same job
twice while it waits is a no-op; that makes the recovery sweep (re-enqueue what looks stuck) safe.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import expires_extra_ms, job_key_prefix
from arq.jobs import serialize_job
from arq.typing import WorkerCoroutine
from arq.utils import timestamp_ms
from arq.worker import func

from aijobs.queue.lanes import LaneWorker
from aijobs.routing.config import LaneConfig

RUN_JOB = "run_job"
#: The arq task that polls a media job's provider task once (and reschedules itself).
POLL_TASK = "poll_task"
#: A batch driver's tick (the batch lane only).
RUN_BATCH = "run_batch"
BATCH_LANE = "batch"


def batch_tick_id(batch_id: str) -> str:
    """A fresh arq id for a batch's next tick (the running tick still holds the last one)."""
    return f"batch:{batch_id}:{time.time_ns()}"


#: The internal lane webhook deliveries run on, apart from every job lane.
WEBHOOK_LANE = "webhooks"
#: The arq task turning one job event into deliveries (enqueued by the event's own script).
WEBHOOK_FANOUT = "webhook_fanout"
#: The arq task making one delivery attempt.
WEBHOOK_SEND = "webhook_send"
#: How long arq keeps a payload (its own default); a webhook retry is a new arq job, so it never expires.
PAYLOAD_TTL_MS = expires_extra_ms
WorkerFunction = WorkerCoroutine


def queue_name(lane: str) -> str:
    return f"aijobs:lane:{lane}"


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def redis_settings(url: str) -> RedisSettings:
    return RedisSettings.from_dsn(url)


@dataclass(frozen=True, slots=True)
class Delivery:
    """The two writes arq's ``enqueue_job`` makes, for a script that enqueues as it creates a record.

    ``SET job_key payload PX expires_ms NX`` then ``ZADD queue_key score_ms job_id``: done inside the
    record's creation script, submitting a job is one round trip and can never leave a record that
    was written but not queued.
    """

    job_key: str
    queue_key: str
    payload: bytes
    score_ms: int
    expires_ms: int

    @property
    def arq_id(self) -> str:
        return self.job_key.removeprefix(job_key_prefix)


def delivery(job_id: str, lane: str) -> Delivery:
    """How to enqueue ``job_id`` on ``lane`` now, in arq's own format."""
    now_ms = timestamp_ms()
    payload = serialize_job(RUN_JOB, (job_id,), {}, None, now_ms, serializer=_dumps)
    return Delivery(job_key_prefix + job_id, queue_name(lane), payload, now_ms, expires_extra_ms)


def poll_id(job_id: str) -> str:
    """The arq job id of ``job_id``'s task polls: one per job, so a poll is never scheduled twice."""
    return f"poll:{job_id}"


def poll_delivery(job_id: str, lane: str, defer_s: float) -> Delivery:
    """How to schedule the first poll of ``job_id``'s provider task, ``defer_s`` from now."""
    return task_delivery(POLL_TASK, poll_id(job_id), (job_id,), lane, defer_s)


def task_delivery(function: str, arq_id: str, args: tuple[str, ...], lane: str, defer_s: float) -> Delivery:
    """How to enqueue ``function(*args)`` as arq job ``arq_id`` on ``lane``, ``defer_s`` from now."""
    defer_ms = int(defer_s * 1000)
    score_ms = timestamp_ms() + defer_ms
    payload = serialize_job(function, args, {}, None, score_ms, serializer=_dumps)
    # The payload lives a day past when it is due (as arq's own deferred jobs do), however far away.
    return Delivery(job_key_prefix + arq_id, queue_name(lane), payload, score_ms, defer_ms + expires_extra_ms)


class JobQueue:
    """Puts job ids on lanes."""

    def __init__(self, pool: ArqRedis) -> None:
        self._pool = pool

    @classmethod
    async def connect(cls, redis_url: str) -> JobQueue:
        pool = await create_pool(
            redis_settings(redis_url), job_serializer=_dumps, job_deserializer=orjson.loads
        )
        return cls(pool)

    async def enqueue(self, job_id: str, lane: str, defer_s: float = 0) -> bool:
        """Queue ``job_id`` on ``lane``; ``False`` when it is already waiting there."""
        job = await self._pool.enqueue_job(
            RUN_JOB, job_id, _job_id=job_id, _queue_name=queue_name(lane), _defer_by=defer_s or None
        )
        return job is not None

    async def enqueue_task(
        self, function: str, arq_id: str, args: tuple[str, ...], lane: str, defer_s: float = 0
    ) -> bool:
        """Queue ``function(*args)`` as arq job ``arq_id`` on ``lane`` (after ``defer_s``); ``False`` if it
        already waits."""
        job = await self._pool.enqueue_job(
            function, *args, _job_id=arq_id, _queue_name=queue_name(lane), _defer_by=defer_s or None
        )
        return job is not None

    async def waiting(self, job_ids: list[str]) -> set[str]:
        """Which of ``job_ids`` arq still holds (waiting or running), in one round trip."""
        async with self._pool.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.exists(job_key_prefix + job_id)
            held = await pipe.execute()
        return {job_id for job_id, found in zip(job_ids, held, strict=True) if found}

    async def discard(self, job_id: str, lane: str) -> None:
        """Take a waiting job off its lane (a canceled job need not even be picked up)."""
        async with self._pool.pipeline(transaction=True) as pipe:
            pipe.zrem(queue_name(lane), job_id)
            pipe.delete(f"arq:job:{job_id}")
            await pipe.execute()

    async def wake(self, arq_job_id: str, lane: str) -> bool:
        """Make a scheduled arq job due now (a canceled media job's next poll); ``False`` if none waits."""
        changed = await self._pool.zadd(queue_name(lane), {arq_job_id: timestamp_ms()}, xx=True, ch=True)
        return bool(changed)

    async def close(self) -> None:
        await self._pool.aclose(close_connection_pool=True)


def lane_worker_options(
    lane: str, config: LaneConfig, functions: dict[str, WorkerFunction], redis_url: str
) -> dict[str, Any]:
    """arq Worker settings for one lane, tuned by ``config`` (arq's defaults cap throughput).

    ``functions`` maps arq function names (:data:`RUN_JOB`, :data:`POLL_TASK`, …) to coroutines.
    """
    return {
        "functions": [func(coroutine, name=name) for name, coroutine in functions.items()],
        "queue_name": queue_name(lane),
        "redis_settings": redis_settings(redis_url),
        "max_jobs": config.max_jobs,
        "poll_delay": config.poll_delay_s,
        "job_timeout": config.job_timeout_s + 10,  # the worker enforces its own deadline first
        "keep_result": 0,  # the job record is the result; arq's copy would be a second write
        "job_serializer": _dumps,
        "job_deserializer": orjson.loads,
        "log_results": False,
    }


def lane_worker(
    lane: str,
    config: LaneConfig,
    functions: dict[str, WorkerFunction],
    ctx: dict[str, Any],
    redis_url: str,
    yield_to: Callable[[], bool] | None = None,
) -> LaneWorker:
    """A worker for one lane; signals are the caller's to handle. See :class:`LaneWorker` for ``yield_to``."""
    options = lane_worker_options(lane, config, functions, redis_url)
    return LaneWorker(**options, lease_s=config.lease_s, ctx=ctx, handle_signals=False, yield_to=yield_to)
