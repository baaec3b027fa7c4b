"""The worker process: serve lanes until SIGINT/SIGTERM, sweep for stranded jobs, export the ledger.

:func:`serve` is what ``aijobs worker`` runs; :func:`arq_settings` gives arq's own CLI the same
lanes. Running one job is :class:`aijobs.worker.Runtime`'s business.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from typing import Any

from aijobs import heap
from aijobs.batchrun import run_batch
from aijobs.queue import (
    BATCH_LANE,
    POLL_TASK,
    RUN_BATCH,
    RUN_JOB,
    WEBHOOK_FANOUT,
    WEBHOOK_LANE,
    WEBHOOK_SEND,
    WorkerFunction,
    lane_worker,
    lane_worker_options,
)
from aijobs.routing import Routing, load_policy
from aijobs.routing.config import LANES, LaneName, RoutingConfig, WorkerLane
from aijobs.settings import Settings
from aijobs.webhooks.dispatch import Dispatcher, webhook_fanout, webhook_send
from aijobs.worker import Runtime, poll_task, run_job

log = logging.getLogger(__name__)
RECOVERY_INTERVAL_S = 15.0


def lane_functions(lane: WorkerLane) -> dict[str, WorkerFunction]:
    """The arq functions a lane runs: jobs and their polls, or webhook deliveries."""
    if lane == WEBHOOK_LANE:
        return {WEBHOOK_FANOUT: webhook_fanout, WEBHOOK_SEND: webhook_send}
    if lane == BATCH_LANE:
        return {RUN_JOB: run_job, POLL_TASK: poll_task, RUN_BATCH: run_batch}
    return {RUN_JOB: run_job, POLL_TASK: poll_task}


def dispatcher_for(runtime: Runtime) -> Dispatcher:
    return Dispatcher(
        runtime.redis, runtime.store, runtime.blobs, runtime.guard, runtime.routing.config.webhooks,
        runtime.settings.blob_url_ttl_s,
    )  # fmt: skip


async def serve(settings: Settings, routing: Routing, lanes: list[WorkerLane], env: dict[str, str]) -> bool:
    """Serve ``lanes`` until SIGINT/SIGTERM, then finish running jobs (grace period).

    Returns ``False`` when a lane stopped on its own (an error), so the process can exit non-zero
    and its supervisor restart it.
    """
    runtime = await Runtime.start(settings, routing, env)
    heap.settle()
    lower_priority(routing.config, lanes)
    dispatcher = dispatcher_for(runtime) if WEBHOOK_LANE in lanes else None
    ctx: dict[str, Any] = {"runtime": runtime, "dispatcher": dispatcher}
    workers = [
        lane_worker(lane, routing.config.lane(lane), lane_functions(lane), ctx, settings.redis_url)
        for lane in job_lanes(lanes)
    ]
    if WEBHOOK_LANE in lanes:  # deliveries trail a burst of jobs rather than slow it down
        job_workers = list(workers)
        config = routing.config.lane(WEBHOOK_LANE)
        busy = lambda: any(w.busy() for w in job_workers)  # noqa: E731
        hooks = lane_worker(WEBHOOK_LANE, config, lane_functions(WEBHOOK_LANE), ctx, settings.redis_url, busy)
        workers.append(hooks)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(w.main()) for w in workers]
    sweeper = asyncio.create_task(_sweep(runtime, job_lanes(lanes), stop))
    log.info("worker serving lanes %s", ", ".join(lanes))
    await asyncio.wait([*tasks, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    failed = [t for t in tasks if t.done() and (t.cancelled() or t.exception() is not None)]
    for task in failed:
        log.error("a lane stopped unexpectedly; shutting the worker down", exc_info=task.exception())
    for w in workers:
        w.allow_pick_jobs = False
    running = [t for w in workers for t in w.tasks.values() if not t.done()]
    if running:
        log.info("finishing %d running jobs", len(running))
        await asyncio.wait(running, timeout=shutdown_grace_s(settings, routing, lanes))
    for w in workers:
        with contextlib.suppress(asyncio.CancelledError):
            await w.close()
    for task in [*tasks, sweeper]:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    if dispatcher is not None:
        await dispatcher.close()
    await runtime.close()
    return not failed


def lower_priority(config: RoutingConfig, lanes: list[WorkerLane]) -> int:
    """Lower the process's CPU priority by the least ``cpu_nice`` of its lanes (a worker that also
    serves interactive work keeps its priority); the niceness added."""
    nice = min(config.lane(lane).cpu_nice for lane in lanes)
    if nice > 0:
        os.nice(nice)
        log.info("worker CPU priority lowered by %d (nice)", nice)
    return nice


def job_lanes(lanes: list[WorkerLane]) -> list[LaneName]:
    return [lane for lane in LANES if lane in lanes]


def arq_settings(lane: WorkerLane) -> dict[str, Any]:
    """Settings for arq's own CLI (``arq workers.interactive.WorkerSettings``): one lane per process.

    ``aijobs worker --lanes ...`` is the usual way to run workers; this exists for deployments that
    prefer arq's runner. Settings and routing are read from the environment once, here.
    """
    settings = Settings()
    env = dict(os.environ)
    routing = load_policy(settings.routing_file, env)

    async def startup(ctx: dict[str, Any]) -> None:
        ctx["runtime"] = runtime = await Runtime.start(settings, routing, env)
        ctx["dispatcher"] = dispatcher_for(runtime) if lane == WEBHOOK_LANE else None
        ctx["stop"] = stop = asyncio.Event()
        ctx["sweeper"] = asyncio.create_task(_sweep(runtime, job_lanes([lane]), stop))

    async def shutdown(ctx: dict[str, Any]) -> None:
        ctx["stop"].set()
        await ctx["sweeper"]
        if ctx["dispatcher"] is not None:
            await ctx["dispatcher"].close()
        await ctx["runtime"].close()

    options = lane_worker_options(lane, routing.config.lane(lane), lane_functions(lane), settings.redis_url)
    return {**options, "on_startup": startup, "on_shutdown": shutdown}


def shutdown_grace_s(settings: Settings, routing: Routing, lanes: list[WorkerLane]) -> float:
    """How long a stopping worker waits for running jobs: ``shutdown_grace_s`` (default 25 s, under
    container stop timeouts), and no longer than its lanes' longest job timeout."""
    return min(settings.shutdown_grace_s, max(routing.config.lane(lane).job_timeout_s for lane in lanes))


async def _sweep(runtime: Runtime, lanes: list[LaneName], stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RECOVERY_INTERVAL_S)
        if stop.is_set():
            return
        try:
            if count := await runtime.recover(lanes):
                log.warning("re-enqueued %d stranded jobs", count)
        except Exception:
            log.exception("recovery sweep failed")
        try:
            await runtime.export_ledger()
        except Exception:
            log.exception("ledger export failed; it is retried on the next sweep")
