"""``LaneWorker``: arq's Worker with a batched claim, so one process can keep thousands of jobs in flight.

Stock arq starts jobs one at a time with four round trips each (WATCH, EXISTS, ZSCORE, MULTI/EXEC),
and because a running job stays in the queue, every poll walks all running jobs again. Measured
here, that capped one worker near 500 simulator jobs/s and took 11.6 s to start 5,000 jobs.

This subclass keeps arq's data model (queue sorted set, ``arq:job:*`` payloads, ``arq:in-progress:*``
locks, ``arq:retry:*`` counters) and replaces only the start path:

- one Lua script claims up to the free slots: for each due job it takes the in-progress lock as a
  lease (:mod:`aijobs.queue.leases`), counts the try, reads the payload, and moves the job's score
  to the lease's end so later polls skip it (a visibility timeout). The worker renews all its
  leases in one call every third of ``lease_s``; if it dies, its jobs come due within ``lease_s``
  and any worker (ours or stock arq) delivers them again. A run whose lease another worker took
  (its worker stalled past the lease) is cancelled, so it stops calling upstream;
- the task function runs directly under the job timeout, its own time limit;
- finished jobs' arq keys are removed in one batched script per event-loop turn;
- a stopping worker hands back every job it still holds, due at once, in one call;
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
from arq.worker import Retry
from redis.exceptions import RedisError

from aijobs.queue.leases import Leases

log = logging.getLogger(__name__)

POLL_BACKOFF_S = 1.0
#: Each worker reports its running jobs under ``{queue}:inflight`` this often (for ``/metrics``).
INFLIGHT_SUFFIX = ":inflight"
INFLIGHT_REPORT_S = 1.0
#: A lane that started a job this recently counts as busy (for lanes yielding to it).
BUSY_WINDOW_S = 0.1
#: How long a claimed job stays its worker's without a renewal (renewed every third of it).
DEFAULT_LEASE_S = 10.0


class LaneWorker(Worker):
    """An arq Worker whose start path claims jobs in batches, under leases (see the module docstring)."""

    def __init__(
        self,
        *args: Any,
        lease_s: float = DEFAULT_LEASE_S,
        yield_to: Callable[[], bool] | None = None,
        yielding_max_jobs: int = 8,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.lease_s = lease_s
        self._leases: Leases | None = None
        self._yield_to = yield_to
        self._yielding_max_jobs = yielding_max_jobs
        self._claimed_at = 0.0
        self._settle_ids: list[str] = []
        self._settling: asyncio.Task[None] | None = None
        #: Jobs claimed and not yet settled or released: what a stopping worker hands back.
        self._held: set[str] = set()
        #: Jobs whose lease another worker took: their runs are stopped, and release nothing.
        self._lost: set[str] = set()
        self._closing = False
        self._worker_id = uuid.uuid4().hex[:12]
        self._reported_at = 0.0
        self._renewed_at = time.monotonic()

    @property
    def leases(self) -> Leases:
        if self._leases is None:  # the pool exists only once the worker runs
            self._leases = Leases(self.pool, self.queue_name, self.lease_s)
        return self._leases

    async def _poll_iteration(self) -> None:
        try:
            if time.monotonic() - self._renewed_at >= self.leases.renew_s:
                await self._renew()
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
        claimed = await self.leases.claim(free)
        if claimed:
            self._claimed_at = time.monotonic()
        for job in claimed:
            self.job_counter += 1
            self._held.add(job.job_id)
            task = self.loop.create_task(self._run(job.job_id, job.score, job.job_try, job.payload))
            task.add_done_callback(functools.partial(self._job_done, job.job_id))
            self.tasks[job.job_id] = task

    async def _renew(self) -> None:
        """Renew every running job's lease in one call; stop the runs of jobs another worker took."""
        started = time.monotonic()
        lost = await self.leases.renew([job_id for job_id in self.tasks if job_id in self._held])
        self._renewed_at = started
        for job_id in lost:
            task = self.tasks.get(job_id)
            if task is None or task.done():
                continue
            log.warning("job %s: its lease passed to another worker; stopping this run", job_id)
            self._lost.add(job_id)
            self._held.discard(job_id)
            task.cancel()

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
        self._lost.discard(job_id)
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
            if job_id in self._lost:
                return  # another worker runs it now: nothing here is ours to release
            self.jobs_retried += 1
            if not self._closing:  # a stopping worker hands back all its jobs in one call
                await asyncio.shield(self._release(job_id))
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
        self._held.discard(job_id)
        self._settle_ids.append(job_id)
        if self._settling is None or self._settling.done():
            self._settling = self.loop.create_task(self._flush())

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let the jobs finishing in this loop turn join the batch
        while self._settle_ids:
            ids, self._settle_ids = self._settle_ids, []
            try:
                await self.leases.settle(ids)
            except (RedisError, OSError) as exc:
                # Harmless: those jobs are finished, so their redelivery finds a terminal record.
                log.warning("clearing %d finished jobs from %s failed: %s", len(ids), self.queue_name, exc)

    async def _release(self, job_id: str, delay_ms: int = 0, uncount: bool = False) -> None:
        with contextlib.suppress(Exception):
            await self.leases.release([job_id], delay_ms, uncount=uncount)
            self._held.discard(job_id)

    async def hand_back(self) -> int:
        """Stop every running job and make each one still held due again now, in one call.

        A stopping worker calls this last: whatever its cancelled runs managed to release, every job
        it still holds is due the moment it exits (a release already done is not done twice).
        """
        self._closing = True
        running = [task for task in self.tasks.values() if not task.done()]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        held, self._held = sorted(self._held), set()
        count = await self.leases.release(held, counter="handed_back") if held else 0
        if running:
            log.info("%s: handed back %d unfinished jobs", self.queue_name, len(running))
        return count

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.hand_back()
        with contextlib.suppress(Exception):
            await self.pool.hdel(self.queue_name + INFLIGHT_SUFFIX, self._worker_id)  # type: ignore[misc]
        if self._settling is not None:
            with contextlib.suppress(Exception):
                await self._settling
        await super().close()
