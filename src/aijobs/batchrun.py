"""The batch driver: runs a batch's lines as jobs on the batch lane, a window at a time, then writes
its output and error files.

A driver *tick* is one short task on the batch lane (arq jobs must stay short); it schedules the
next tick itself until the batch ends. Each tick:

1. counts line jobs that have finished since the last tick (:meth:`BatchStore.settle`, exactly once);
2. unless the batch is being cancelled or has run out its window, reads the input file from where
   the last tick stopped and starts lines until ``window`` are open. A line's job is created with an
   idempotency key made of the batch and the line number, so a tick retried after a crash finds
   the jobs it already made instead of making them twice;
3. once nothing is open and nothing is left to start (or no more may start), finalizes: the output
   file holds each succeeded line, the error file each failed one and each line never started.

Memory is one window of lines and one chunk of results, whatever the batch's size.

A batch of a feature with ``provider_batch`` first goes to a provider's own batch API
(:mod:`aijobs.handoff`); once that is over, the lines it answered are recorded as they are walked
and the rest run here as above.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from aijobs.batches import TERMINAL, Batch, BatchStatus, BatchStore
from aijobs.batchlines import LineFormat, LineJob, line_format
from aijobs.files import FileRecord, Files
from aijobs.handoff import Handoff, batch_apis
from aijobs.jobs import TERMINAL as JOB_TERMINAL
from aijobs.jobs import JobStatus
from aijobs.queue import BATCH_LANE, RUN_BATCH, batch_tick_id, delivery
from aijobs.storage import BlobStore
from aijobs.store import JobStore

log = logging.getLogger(__name__)

#: Lines looked up per round trip when writing the result files.
RESULT_CHUNK = 500
#: Seconds between ticks while lines are running (a tick that started lines comes back sooner).
TICK_S = 0.5
BUSY_TICK_S = 0.05
#: After a tick raises: the wait before the next, and how many broken ticks fail the batch.
FAILED_TICK_S = 2.0
MAX_TICK_FAILURES = 10


@dataclass(slots=True)
class BatchDriver:
    """Everything a tick needs; built once per worker."""

    batches: BatchStore
    store: JobStore
    files: Files
    blobs: BlobStore
    window: int
    handoff: Handoff | None = None

    async def tick(self, batch_id: str) -> float | None:
        """Advance the batch; seconds until the next tick, or ``None`` once it has ended."""
        batch = await self.batches.get(batch_id)
        if batch is None or batch.status in TERMINAL:
            return None
        if batch.status is BatchStatus.VALIDATING:
            await self.batches.move(batch.id, BatchStatus.IN_PROGRESS, in_progress_at=time.time())
            batch.status = BatchStatus.IN_PROGRESS
        if batch.status is BatchStatus.FINALIZING:
            await self._finalize(batch)
            return None
        open_jobs = await self._settle(batch)
        ending = self._ending(batch)
        if self._handing(batch, ending):
            assert self.handoff is not None
            lines = await self._all_lines(batch) if self.handoff.wants_lines(batch) else None
            return await self.handoff.step(batch, lines, ending is not None)
        started = 0
        if ending is None:
            started = await self._start_lines(batch, self.window - len(open_jobs))
            if batch.expanded < batch.total or open_jobs or started:
                return BUSY_TICK_S if started else TICK_S
            ending = BatchStatus.COMPLETED
        elif batch.remote.get("stage") == "collected" and batch.expanded < batch.total:
            # What the provider answered is kept; nothing else starts.
            await self._start_lines(batch, self.window, answered_only=True)
            return BUSY_TICK_S
        elif open_jobs:
            return TICK_S  # cancelled or expired: what runs finishes; nothing new starts
        await self._finalize(batch, ending)
        return None

    def _handing(self, batch: Batch, ending: BatchStatus | None) -> bool:
        """Whether the batch is with (or about to go to) a provider's batch API; an ending batch is
        not handed over if it is not already."""
        if self.handoff is None or not self.handoff.active(batch):
            return False
        return ending is None or not self.handoff.wants_lines(batch)

    async def _all_lines(self, batch: Batch) -> list[tuple[int, LineJob]]:
        """Every line, as job inputs (a handed-over batch is at most a provider's line limit)."""
        record = await self.files.get(batch.input_file_id, batch.tenant)
        if record is None:
            return []
        fmt = self._format(batch)
        async with contextlib.aclosing(_raw_lines(self.blobs.read(record.key))) as reading:
            return [(number, fmt.job(raw, number)) async for number, raw in _numbered(reading)]

    def _ending(self, batch: Batch) -> BatchStatus | None:
        if batch.status is BatchStatus.CANCELLING:
            return BatchStatus.CANCELLED
        if time.time() >= batch.expires_at:
            return BatchStatus.EXPIRED
        return None

    async def _settle(self, batch: Batch) -> list[str]:
        """Count the open line jobs that have finished; the ones still open."""
        open_jobs = await self.batches.open_jobs(batch.id)
        finished: dict[str, JobStatus] = {}
        for job, status in zip(open_jobs, await self.store.statuses(open_jobs), strict=True):
            if status is None:  # its record expired: it can never finish now, so it counts as failed
                finished[job] = JobStatus.FAILED
            elif status in JOB_TERMINAL:
                finished[job] = status
        await self.batches.settle(batch.id, finished)
        return [job for job in open_jobs if job not in finished]

    async def _start_lines(self, batch: Batch, room: int, *, answered_only: bool = False) -> int:
        """Take up to ``room`` more lines from where the input was left: each line the provider's batch
        answered becomes a finished job, each other one is started (unless ``answered_only``).
        How many lines were taken."""
        if room <= 0 or batch.expanded >= batch.total:
            return 0
        record = await self.files.get(batch.input_file_id, batch.tenant)
        if record is None:
            await self.fail(
                batch, "input_file_gone", "the input file expired or was deleted before the batch ran"
            )
            return 0
        taken: dict[int, bytes] = {}
        offset, number = batch.offset, batch.expanded
        async with contextlib.aclosing(_lines(self.blobs.read(record.key, offset))) as reading:
            async for raw, consumed in reading:
                offset += consumed
                if not raw.strip():
                    continue
                taken[number] = raw
                number += 1
                if len(taken) >= room:
                    break
        fmt = self._format(batch)
        lines = {n: fmt.job(raw, n) for n, raw in taken.items()}
        answered = await self._record_answered(batch, lines)
        # Created together, so their record scripts share pipelines (one create is one round trip).
        here = [] if answered_only else [n for n in taken if n not in answered]
        ids = await asyncio.gather(*(self._start(batch, n, lines[n], taken[n]) for n in here))
        jobs = dict(zip(here, ids, strict=True))
        if not await self.batches.advance(batch, batch.expanded, jobs, offset, number):
            return 0  # another run of this tick got there first (its jobs are these same ones)
        batch.offset, batch.expanded = offset, number
        return len(taken)

    async def _record_answered(self, batch: Batch, lines: dict[int, LineJob]) -> set[int]:
        """Record a finished job for each line the provider's batch answered; those lines.

        A line is mapped to its job and counted in one step, then its job is written; a retried or
        duplicated tick finds the mapped job and writes it only if it is missing (a job is written
        once, ledger entry included), so no line is counted or billed twice."""
        if self.handoff is None:
            return set()
        results = await self.handoff.answers(batch, list(lines))
        if not results:
            return set()
        now = time.time()
        finished = {number: self.handoff.record(batch, self.store.new_id(now), lines[number], result)
                    for number, result in results.items()}  # fmt: skip
        claims = {number: (job.id, job.status) for number, (job, _) in finished.items()}
        winners = await self.batches.claim(batch, claims)
        for (number, (job, entry)), winner in zip(finished.items(), winners, strict=True):
            if winner != job.id:  # mapped by an earlier tick, which may have stopped before writing it
                job, entry = self.handoff.record(batch, winner, lines[number], results[number])
            await self.store.record(job, entry)
        return set(results)

    async def _start(self, batch: Batch, number: int, line: LineJob, raw: bytes) -> str:
        # A newline cannot be in an Idempotency-Key header, so no caller's key can collide with this one.
        key = hashlib.sha256(f"batch\n{batch.id}\n{number}".encode()).hexdigest()
        created = await self.store.create(
            tenant=batch.tenant, type=batch.type, feature=batch.feature, lane=BATCH_LANE,
            input=line.input, metadata={"batch_id": batch.id, **line.metadata},
            idempotency=(key, hashlib.sha256(raw).hexdigest()), deliver=delivery,
        )  # fmt: skip
        return created.job.id

    def _format(self, batch: Batch) -> LineFormat:
        return line_format(batch.endpoint, self.blobs, self.files.ttl_s)

    async def fail(self, batch: Batch, code: str, message: str) -> None:
        """End the batch as failed, with ``code`` in its errors."""
        errors = orjson.dumps([{"code": code, "message": message, "param": None, "line": None}])
        await self.batches.move(batch.id, BatchStatus.FAILED, ended_at=time.time(), errors=errors)
        if self.handoff is not None:
            await self.handoff.forget(batch)

    async def _finalize(self, batch: Batch, ending: BatchStatus | None = None) -> None:
        if ending is not None:
            moved = await self.batches.move(
                batch.id, BatchStatus.FINALIZING, finalizing_at=time.time(), ending=ending.value
            )
            if moved is not None:  # another tick got there first
                return
            batch.ending = ending.value
        if self.handoff is not None:
            await self.handoff.forget(batch)
        output = await self._write(batch, "output", self._results(batch, succeeded=True))
        errors = await self._write(batch, "errors", self._results(batch, succeeded=False))
        await self.batches.move(
            batch.id, BatchStatus(batch.ending), ended_at=time.time(),
            output_file_id=output.id if output else "", error_file_id=errors.id if errors else "",
        )  # fmt: skip

    async def _results(self, batch: Batch, *, succeeded: bool) -> AsyncIterator[bytes]:
        """The output file's lines (``succeeded``) or the error file's, in input order. Lines that never
        ran (the batch ended first) are in the error file too, read again from the input."""
        unrun = None
        if not succeeded and await self.batches.mapped(batch.id) < batch.total:
            record = await self.files.get(batch.input_file_id, batch.tenant)
            if record is None:
                log.error("batch %s: its input file is gone; lines it never ran are left out", batch.id)
            else:
                unrun = _raw_lines(self.blobs.read(record.key))
        try:
            async for line in self._result_lines(batch, succeeded, unrun):
                yield line
        finally:
            if unrun is not None:
                await unrun.aclose()

    async def _result_lines(
        self, batch: Batch, succeeded: bool, unrun: AsyncGenerator[bytes, None] | None
    ) -> AsyncGenerator[bytes, None]:
        fmt = self._format(batch)
        code, message = f"batch_{batch.ending}", f"the batch was {batch.ending} before this request ran"
        for first in range(0, batch.total, RESULT_CHUNK):
            line_jobs = await self.batches.line_jobs(batch.id, first, min(RESULT_CHUNK, batch.total - first))
            ids = [job for job in line_jobs if job]
            # Statuses first: each file loads only its own records (outputs can be large).
            statuses = await self.store.statuses(ids)
            ours = [job for job, status in zip(ids, statuses, strict=True)
                    if (status is JobStatus.SUCCEEDED) == succeeded]  # fmt: skip
            records = {job.id: job for job in await self.store.get_many(ours)}
            for number, job_id in enumerate(line_jobs, first):
                raw = await anext(unrun, b"") if unrun is not None else b""  # in step with the numbers
                if job_id is None and unrun is not None:
                    yield fmt.unrun(batch.id, number, raw, code, message)
                elif job_id in records:
                    yield await fmt.result(records[job_id])

    async def _write(self, batch: Batch, name: str, lines: AsyncIterator[bytes]) -> FileRecord | None:
        """Store ``lines`` as a file of the batch's tenant; ``None`` when there are none."""
        async with contextlib.aclosing(lines):  # type: ignore[type-var]  # the lines come from a generator
            first = await anext(lines, None)
            if first is None:
                return None
            return await self.files.store(
                batch.tenant, "batch_output", f"{batch.id}_{name}.jsonl", _following(first, lines),
                "application/jsonl",
            )  # fmt: skip


async def _following(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for line in rest:
        yield line


async def _numbered(lines: AsyncIterator[bytes]) -> AsyncIterator[tuple[int, bytes]]:
    number = 0
    async for line in lines:
        yield number, line
        number += 1


async def _raw_lines(chunks: AsyncIterator[bytes]) -> AsyncGenerator[bytes, None]:
    """Each non-blank line of a stream: one per batch line, in order."""
    async with contextlib.aclosing(_lines(chunks)) as lines:
        async for raw, _ in lines:
            if raw.strip():
                yield raw


async def _lines(chunks: AsyncIterator[bytes]) -> AsyncGenerator[tuple[bytes, int], None]:
    """Each line of a stream (without its newline) and the bytes it took, newline included."""
    rest = b""
    async with contextlib.aclosing(chunks):  # type: ignore[type-var]  # the BlobStore's reads are generators
        async for chunk in chunks:
            *complete, rest = (rest + chunk).split(b"\n")
            for line in complete:
                yield line, len(line) + 1
    if rest:
        yield rest, len(rest)


async def run_batch(ctx: dict[str, Any], batch_id: str, seq: str = "0") -> None:
    """The batch lane's arq function: one tick, then the next one scheduled (see the module docstring)."""
    runtime = ctx["runtime"]
    driver = ctx.get("batch_driver")
    if driver is None:
        settings = runtime.settings
        batches = BatchStore(runtime.redis, settings.job_ttl_s)
        handoff = Handoff(runtime.routing, batch_apis(runtime.routing, runtime.adapters), batches)
        driver = ctx["batch_driver"] = BatchDriver(
            batches, runtime.store, runtime.files, runtime.blobs, settings.batch_window, handoff
        )
    try:
        next_s = await driver.tick(batch_id)
    except Exception as exc:  # a Redis blip, a bug: try again a little later, then give up on the batch
        log.exception("batch %s: a driver tick failed", batch_id)
        if await driver.batches.count_failure(batch_id) >= MAX_TICK_FAILURES:
            batch = await driver.batches.get(batch_id)
            if batch is not None:
                message = f"the batch could not be driven: {type(exc).__name__}"
                await driver.fail(batch, "batch_driver_error", message)
            return
        next_s = FAILED_TICK_S
    if next_s is not None and await driver.batches.next_tick(batch_id, int(seq)):
        args = (batch_id, str(int(seq) + 1))
        await runtime.queue.enqueue_task(RUN_BATCH, batch_tick_id(batch_id), args, BATCH_LANE, defer_s=next_s)
