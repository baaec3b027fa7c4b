"""``LaneWorker``: arq's Worker with a batched claim, so one process can keep thousands of jobs in flight.

Stock arq starts jobs one at a time with four round trips each (WATCH, EXISTS, ZSCORE, MULTI/EXEC),
and because a running job stays in the queue, every poll walks all running jobs again. Measured
here, that capped one worker near 500 simulator jobs/s and took 11.6 s to start 5,000 jobs.

This subclass keeps arq's data model (queue sorted set, ``arq:job:*`` payloads, ``arq:in-progress:*``
locks, ``arq:retry:*`` counters) and replaces only the start path:

- one Lua script claims up to the free slots: for each due job it takes the in-progress lock,
  counts the try, reads the payload, and moves the job's score to ``now + lock`` so later polls skip
  it (a visibility timeout). If the worker dies, the score comes due as the lock expires, and any
  worker (ours or stock arq) delivers the job again, which is arq's own redelivery timing;
- the task function runs directly under the job timeout;
- finished jobs' arq keys are removed in one batched pipeline per event-loop turn;
- a task raising arq's ``Retry(defer=...)`` (a job-level requeue) has its job moved to ``now + defer``
  with the delivery uncounted: a requeue is a decision, not a crash;
- a background lane (webhooks) can be told to ``yield_to`` busy lanes in the same process: while
  one of them is starting jobs, it keeps at most ``yielding_max_jobs`` running, so deliveries trail
  a burst of jobs instead of taking the CPU the jobs need (and catch up right after).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from arq import Worker
from arq.constants import in_progress_key_prefix, job_key_prefix, retry_key_prefix
from arq.utils import timestamp_ms
from arq.worker import Retry
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

POLL_BACKOFF_S = 1.0
#: Each worker reports its running jobs under ``{queue}:inflight`` this often (for ``/metrics``).
INFLIGHT_SUFFIX = ":inflight"
INFLIGHT_REPORT_S = 1.0
#: A lane that started a job this recently counts as busy (for lanes yielding to it).
BUSY_WINDOW_S = 0.1

# KEYS: queue   ARGV: now_ms, lock_ms, max claims
_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
local claimed = {}
local until_ms = tonumber(ARGV[1]) + tonumber(ARGV[2])
for _, id in ipairs(due) do
  if redis.call('SET', 'arq:in-progress:' .. id, '1', 'PX', ARGV[2], 'NX') then
    local score = redis.call('ZSCORE', KEYS[1], id)
    redis.call('ZADD', KEYS[1], 'XX', until_ms, id)
    local try = redis.call('INCR', 'arq:retry:' .. id)
    redis.call('EXPIRE', 'arq:retry:' .. id, 88400)
    claimed[#claimed + 1] = id
    claimed[#claimed + 1] = score
    claimed[#claimed + 1] = try
    claimed[#claimed + 1] = redis.call('GET', 'arq:job:' .. id) or ''
  end
end
return claimed
"""


class LaneWorker(Worker):
    """An arq Worker whose start path claims jobs in batches (see the module docstring)."""

    def __init__(
        self,
        *args: Any,
        yield_to: Callable[[], bool] | None = None,
        yielding_max_jobs: int = 8,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._yield_to = yield_to
        self._yielding_max_jobs = yielding_max_jobs
        self._claimed_at = 0.0
        self._claim_script: Any = None
        self._settle_ids: list[str] = []
        self._settling: asyncio.Task[None] | None = None
        self._worker_id = uuid.uuid4().hex[:12]
        self._reported_at = 0.0

    async def _poll_iteration(self) -> None:
        try:
            free = self.max_jobs - self.job_counter
            if self._yield_to is not None and self._yield_to():
                free = min(free, self._yielding_max_jobs - self.job_counter)
            if self.allow_pick_jobs and free > 0:
                await self._claim(free)
            await self.heart_beat()
            if time.monotonic() - self._reported_at >= INFLIGHT_REPORT_S:
                await self._report_inflight()
        except (RedisError, OSError) as exc:
            # Redis restarting or a network blip must not end the worker: wait, then poll again.
            log.warning("polling %s failed (%s); retrying in %.0f s", self.queue_name, exc, POLL_BACKOFF_S)
            await asyncio.sleep(POLL_BACKOFF_S)

    async def _claim(self, free: int) -> None:
        if self._claim_script is None:
            self._claim_script = self.pool.register_script(_CLAIM)
        now_ms = timestamp_ms()  # arq's clock (it rounds); a floor here would skip jobs enqueued this ms
        lock_ms = int(self.in_progress_timeout_s * 1000)
        reply = await self._claim_script(keys=[self.queue_name], args=[now_ms, lock_ms, free])
        if reply:
            self._claimed_at = time.monotonic()
        for i in range(0, len(reply), 4):
            job_id = reply[i].decode()
            self.job_counter += 1
            task = self.loop.create_task(
                self._run(job_id, int(float(reply[i + 1])), int(reply[i + 2]), reply[i + 3])
            )
            task.add_done_callback(functools.partial(self._job_done, job_id))
            self.tasks[job_id] = task

    def busy(self) -> bool:
        """Whether this lane started a job within the last :data:`BUSY_WINDOW_S`."""
        return time.monotonic() - self._claimed_at < BUSY_WINDOW_S

    async def _report_inflight(self) -> None:
        self._reported_at = time.monotonic()
        key = self.queue_name + INFLIGHT_SUFFIX
        async with self.pool.pipeline(transaction=False) as pipe:
            pipe.hset(key, self._worker_id, f"{self.job_counter} {time.time():.3f}")
            pipe.expire(key, 60)
            await pipe.execute()

    def _job_done(self, job_id: str, task: asyncio.Task[None]) -> None:
        # Done tasks leave here, not in a scan of every task on each poll (O(in flight) per poll).
        self.job_counter -= 1
        self.tasks.pop(job_id, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("job %s: the task failed", job_id, exc_info=task.exception())

    async def _run(self, job_id: str, score: int, job_try: int, payload: bytes) -> None:
        if not payload:  # the payload expired (arq's 1-day default): nothing to run
            log.warning("job %s expired before it ran", job_id)
            self._settle(job_id)
            return
        job = orjson.loads(payload)
        function = self.functions.get(job["f"])
        if function is None:  # enqueued for a function this worker does not have: drop it, as arq does
            log.error("job %s names an unknown function %r", job_id, job["f"])
            self.jobs_failed += 1
            self._settle(job_id)
            return
        ctx = {**self.ctx, "job_id": job_id, "job_try": job_try, "score": score}
        try:
            async with asyncio.timeout(function.timeout_s or self.job_timeout_s):
                await function.coroutine(ctx, *job["a"], **job["k"])
        except Retry as retry:
            self.jobs_retried += 1
            await self._release(job_id, delay_ms=retry.defer_score or 0, uncount=True)
            return
        except asyncio.CancelledError:
            # Shutting down mid-job: make it visible again at once rather than after the lock expires.
            await asyncio.shield(self._release(job_id))
            self.jobs_retried += 1
            raise
        except Exception:
            # The task could not finish its job (Redis failed under it, a bug, the job timeout): hand
            # the job back for another delivery; the task decides when enough deliveries were made.
            log.exception("job %s raised; releasing it for another delivery", job_id)
            self.jobs_retried += 1
            await self._release(job_id)
            return
        self.jobs_complete += 1
        self._settle(job_id)

    def _settle(self, job_id: str) -> None:
        """Remove a finished job's arq keys, batched with every other job finishing this loop turn."""
        self._settle_ids.append(job_id)
        if self._settling is None or self._settling.done():
            self._settling = self.loop.create_task(self._flush())

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let the jobs finishing in this loop turn join the batch
        while self._settle_ids:
            ids, self._settle_ids = self._settle_ids, []
            keys = [p + i for i in ids for p in (in_progress_key_prefix, retry_key_prefix, job_key_prefix)]
            try:
                async with self.pool.pipeline(transaction=False) as pipe:
                    pipe.zrem(self.queue_name, *ids)
                    pipe.delete(*keys)
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                # Harmless: those jobs are finished, so their redelivery finds a terminal record.
                log.warning("clearing %d finished jobs from %s failed: %s", len(ids), self.queue_name, exc)

    async def _release(self, job_id: str, delay_ms: int = 0, uncount: bool = False) -> None:
        with contextlib.suppress(Exception):
            async with self.pool.pipeline(transaction=False) as pipe:
                pipe.zadd(self.queue_name, {job_id: timestamp_ms() + delay_ms}, xx=True)
                pipe.delete(in_progress_key_prefix + job_id)
                if uncount:
                    pipe.decr(retry_key_prefix + job_id)
                await pipe.execute()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.pool.hdel(self.queue_name + INFLIGHT_SUFFIX, self._worker_id)  # type: ignore[misc]
        if self._settling is not None:
            with contextlib.suppress(Exception):
                await self._settling
        await super().close()
