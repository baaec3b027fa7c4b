"""Workers: the arq task that runs a job, and the process that serves one or more lanes.

A job run is: claim (queued → running, compare-and-set, one round trip returning the record) →
route (the Router calls adapters) → copy media into the BlobStore → finish (running → succeeded |
failed, compare-and-set). A job canceled while it ran fails the final compare-and-set, so its result
is discarded and any blobs it wrote are deleted.

arq re-runs a job whose worker died once the job's in-progress lock expires; ``job_try > 1`` then
lets the claim take over a record left ``running``.

A job whose targets all failed with transient errors goes back on its lane with a delay (a
job-level requeue, at most ``requeues`` times and only while its deadline leaves room for another
attempt). Every finished job leaves a ledger entry, written with its terminal status.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, TypeVar

import httpx2
from arq.worker import Retry
from redis.asyncio import Redis

from aijobs import connections, ledger, logs, usage
from aijobs.calls import priced_fields
from aijobs.errors import (
    AijobsError,
    Canceled,
    DeadlineExceeded,
    InternalError,
    NoRoute,
    ProviderError,
)
from aijobs.files import Files
from aijobs.inputs import inline_image
from aijobs.jobs import Job, JobStatus
from aijobs.keys import Keys
from aijobs.media import store_outputs
from aijobs.outbound import Guard
from aijobs.polling import Poller, submits_tasks, unknown_submit
from aijobs.providers.base import Adapter, MediaResult, Submitted
from aijobs.providers.registry import build_adapters
from aijobs.providers.tasks import Poll, naming
from aijobs.providers.transport import upstream_client
from aijobs.queue import BATCH_LANE, JobQueue
from aijobs.routing import Routing
from aijobs.routing.breakers import Breakers
from aijobs.routing.budgets import Budgets
from aijobs.routing.config import LaneName
from aijobs.routing.policy import Feature, Target
from aijobs.routing.quotas import Quota, Quotas
from aijobs.routing.router import Outcome, RouteFailed, Router, ShareSpent
from aijobs.settings import Settings
from aijobs.storage import BlobStore, open_blob_store
from aijobs.store import JobStore
from aijobs.types import INPUT_MODELS
from aijobs.types.common import Media, RemoteFile, Usage

log = logging.getLogger(__name__)

#: A job delivered this many times without finishing (its worker keeps dying) is failed, not retried.
MAX_DELIVERIES = 5
RECOVERY_AGE_S = 30.0
#: Errors worth trying the whole route again for, after a pause: the upstreams may recover.
TRANSIENT = frozenset(
    {"provider_rate_limited", "provider_timeout", "provider_unavailable", "provider_bad_response"}
)
REQUEUE_DELAY_CAP_S = 300.0
_MEDIA_OUTPUT_KEY = {"image": "images", "video": "videos"}
T = TypeVar("T")


@dataclass(slots=True)
class Runtime:
    """Everything a job run needs, built once per worker process and shared by its lanes."""

    settings: Settings
    routing: Routing
    redis: Redis
    store: JobStore
    queue: JobQueue
    blobs: BlobStore
    http: httpx2.AsyncClient
    router: Router
    budgets: Budgets
    adapters: dict[tuple[str, str], Adapter]
    files: Files
    guard: Guard
    poller: Poller = field(init=False)

    def __post_init__(self) -> None:
        self.poller = Poller(self.store, self.routing, self.adapters, self)

    @classmethod
    async def start(cls, settings: Settings, routing: Routing, env: dict[str, str]) -> Runtime:
        redis = connections.connect(settings.redis_url)
        http = upstream_client()
        breakers = Breakers(redis, routing.config.breakers, routing.reachable())
        adapters = build_adapters(routing, http, env)
        quotas = {name: Quota(p.batch_rpm, p.batch_tpm) for name, p in routing.config.providers.items()}
        router = Router(adapters, breakers=breakers, quotas=Quotas(redis, quotas))
        store = JobStore(redis, settings.job_ttl_s, *routing.config.ledger.ttls_s())
        queue = await JobQueue.connect(settings.redis_url)
        blobs = await open_blob_store(settings)
        budgets = Budgets(redis, routing.config.breakers.refresh_s)
        files = Files(redis, blobs, settings.file_ttl_s)
        guard = Guard.from_setting(settings.outbound_allow)
        return cls(
            settings, routing, redis, store, queue, blobs, http, router, budgets, adapters, files, guard
        )

    async def close(self) -> None:
        if self.router.breakers is not None:
            await self.router.breakers.flush()
        await self.http.aclose()
        await self.blobs.close()
        await self.queue.close()
        await self.redis.aclose()

    async def process(self, job_id: str, job_try: int = 1) -> None:
        """Run one job to a terminal status. Never raises for a job's own failure."""
        if job_try > MAX_DELIVERIES:
            message = (
                f"the job was delivered {job_try} times without finishing; a worker may be crashing on it"
            )
            fields = {"error": {"code": InternalError.code, "message": message}}
            await self.store.transition(job_id, JobStatus.FAILED, fields=fields)
            return
        allowed = {JobStatus.QUEUED, JobStatus.RUNNING} if job_try > 1 else {JobStatus.QUEUED}
        claim = await self.store.transition(job_id, JobStatus.RUNNING, allowed_from=allowed, want_record=True)
        if not claim.ok or claim.job is None:
            return  # canceled while queued, finished already, or another worker has it
        with logs.bind(job_id=job_id, feature=claim.job.feature):
            await self._process(claim.job)

    async def _process(self, job: Job) -> None:
        job_id = job.id
        feature = self.routing.features.get(job.feature)
        if job.deadline_at is None and job.started_at is not None:
            job.deadline_at = job.started_at + self._deadline_s(feature)
        if job.task and "id" in job.task:
            return  # submitted before this delivery: its scheduled poll carries it on
        resubmit_unknown = bool(feature and feature.resubmit_unknown)
        if unknown_submit(job) and not await self.poller.resume_submit(job, resubmit_unknown):
            return  # its task was found upstream and adopted, or it may exist and the job failed
        try:
            outcome = await self._run_within_deadline(job, feature)
            if isinstance(outcome.result, Submitted):
                attempts = [*job.attempts, *(a.to_dict() for a in outcome.attempts)]
                await self.poller.started(job, outcome, attempts)
                return
            fields = await self._within_deadline(job, feature, self._success_fields(job, outcome))
            target = (outcome.target.provider, outcome.target.model)
        except ShareSpent as spent:
            attempts = [*job.attempts, *(a.to_dict() for a in spent.attempts)]
            if await self._wait_for_share(job, attempts, spent.wait_s):
                raise Retry(defer=spent.wait_s + random.random()) from None  # spread over a second
            return
        except RouteFailed as failed:
            attempts = [*job.attempts, *(a.to_dict() for a in failed.attempts)]
            delay_s = self._requeue_delay_s(job, feature, failed)
            if delay_s is not None and await self._requeue(job, attempts, delay_s):
                raise Retry(defer=delay_s) from None
            await self._fail(job, failed.error, attempts)
            return
        except AijobsError as error:
            await self._fail(job, error, job.attempts)
            return
        except Exception:
            log.exception("job %s: unexpected failure", job_id)
            await self._fail(job, InternalError("the worker failed unexpectedly; see its log"), job.attempts)
            return
        await self._succeed(job, fields, target)

    def _deadline_s(self, feature: Feature | None) -> float:
        if feature is None:
            return 0.0
        return feature.deadline_s or self.routing.config.lane(feature.lane).job_timeout_s

    async def _run_within_deadline(self, job: Job, feature: Feature | None) -> Outcome:
        """Route the job (a media task: submit it) within the feature's deadline."""
        if feature is None:
            raise NoRoute(f"feature {job.feature!r} is no longer in the routing policy")
        request = INPUT_MODELS[job.type].model_validate(job.input)
        return await self._within_deadline(job, feature, self._route(job, feature, request))

    async def _route(self, job: Job, feature: Feature, request: Any) -> Outcome:
        request = await inline_image(
            request, job.tenant, files=self.files, guard=self.guard, http=self.http,
            max_bytes=self.settings.max_input_image_bytes,
        )  # fmt: skip
        targets = await self.budgets.targets(feature)
        tasks = [
            t for t in targets or feature.targets if submits_tasks(self.adapters[(t.provider, feature.type)])
        ]
        if tasks and not await self.poller.mark_submitting(job, tasks):
            raise Canceled("the job was canceled")
        with naming(job.id):  # task submits name their task after the job, where the provider can
            return await self.router.run(feature, request, targets, quota=job.lane == BATCH_LANE)

    async def _within_deadline(self, job: Job, feature: Feature | None, step: Awaitable[T]) -> T:
        assert job.deadline_at is not None
        try:
            async with asyncio.timeout(max(0.0, job.deadline_at - time.time())):
                return await step
        except TimeoutError:
            deadline_s = self._deadline_s(feature)
            raise DeadlineExceeded(f"the job did not finish within its {deadline_s:g} s deadline") from None

    async def _success_fields(self, job: Job, outcome: Outcome) -> dict[str, Any]:
        result = outcome.result
        assert not isinstance(result, Submitted)
        if isinstance(result, MediaResult):
            output = await self._store_media(job, result.items, outcome.target.provider, outcome.target.model)
        else:
            output = result.output()
        route = outcome.route()
        route["model"] = result.model or route["model"]
        attempts = [*job.attempts, *(a.to_dict() for a in outcome.attempts)]
        return priced_fields(
            self.routing.prices, job.type, output, result.usage, attempts, route, outcome.target
        )

    async def finish_media(self, job: Job, poll: Poll, task: dict[str, Any]) -> None:
        """A media task succeeded: copy its outputs into the store and finish the job (the Poller calls)."""
        target = Target(task["provider"], task["model"])
        output = await self._store_media(job, poll.outputs, target.provider, target.model)
        usage = poll.usage or Usage(units=float(len(poll.outputs)) if job.type == "image" else 0.0)
        fields = priced_fields(
            self.routing.prices, job.type, output, usage, job.attempts, job.route or {}, target
        )
        fields["task"] = task
        await self._succeed(job, fields, (target.provider, target.model))

    async def fail(self, job: Job, error: AijobsError, attempts: list[dict[str, Any]]) -> None:
        """Fail ``job`` with ``error`` (the Poller calls this too); recorded in the ledger."""
        await self._fail(job, error, attempts)

    async def _succeed(self, job: Job, fields: dict[str, Any], target: tuple[str, str]) -> None:
        now = time.time()
        entry = ledger.entry(
            job, JobStatus.SUCCEEDED, attempts=fields["attempts"], usage=fields["usage"], target=target,
            finished_at=now,
        )  # fmt: skip
        done = await self.store.transition(job.id, JobStatus.SUCCEEDED, fields=fields, ledger=entry, now=now)
        if done.ok:
            return
        await self._delete_blobs(fields.get("output", {}))  # canceled while running: the result is discarded
        if done.previous is JobStatus.CANCELED:  # what the run spent still belongs in the ledger
            spent = {"attempts": fields["attempts"], "usage": fields["usage"]}
            entry = ledger.entry(
                job, JobStatus.CANCELED, attempts=fields["attempts"], usage=fields["usage"], target=target,
                error_code="gateway_canceled", finished_at=now,
            )  # fmt: skip
            await self.store.transition(
                job.id, JobStatus.CANCELED, allowed_from={JobStatus.CANCELED}, fields=spent, ledger=entry
            )

    def _requeue_delay_s(self, job: Job, feature: Feature | None, failed: RouteFailed) -> float | None:
        """How long to wait before the job's next run, or ``None`` when it should fail now."""
        if feature is None or job.requeues >= feature.requeues or job.deadline_at is None:
            return None
        if failed.error.outcome_unknown if isinstance(failed.error, ProviderError) else False:
            return None  # a task may exist upstream: running the route again could pay twice
        if not isinstance(failed.error, ProviderError) or failed.error.code not in TRANSIENT:
            return None
        if any(a.error_code not in TRANSIENT for a in failed.attempts):
            return None
        delay_s = min(REQUEUE_DELAY_CAP_S, feature.requeue_delay_s * 2.0**job.requeues)
        waits: list[float] = [a.retry_after_s for a in failed.attempts if a.retry_after_s]
        if waits:
            delay_s = max(delay_s, min(max(waits), feature.retry.retry_after_cap_s))
        if time.time() + delay_s + feature.timeout_s > job.deadline_at:
            return None  # no room left for another full attempt
        return delay_s

    async def _wait_for_share(self, job: Job, attempts: list[dict[str, Any]], wait_s: float) -> bool:
        """Back to the queue until its providers' batch shares have room. Not a requeue (none of its
        ``requeues`` is spent) and its deadline starts again when it next runs: waiting for its turn
        is queueing, not running. A media task marked as being submitted never was."""
        fields: dict[str, Any] = {"attempts": attempts, "task": None}
        moved = await self.store.transition(job.id, JobStatus.QUEUED, fields=fields)
        if moved.ok:
            log.info("job %s: its providers' batch shares are spent; back in %.1f s", job.id, wait_s)
        return moved.ok

    async def _requeue(self, job: Job, attempts: list[dict[str, Any]], delay_s: float) -> bool:
        fields: dict[str, Any] = {
            "attempts": attempts, "deadline_at": repr(job.deadline_at), "requeues": job.requeues + 1,
        }  # fmt: skip
        if job.task is not None:
            fields["task"] = None  # every submit failed for sure: the next run starts clean
        moved = await self.store.transition(job.id, JobStatus.QUEUED, fields=fields)
        if moved.ok:
            log.info("job %s: every target failed transiently; requeued for %.1f s", job.id, delay_s)
        return moved.ok

    async def _store_media(
        self, job: Job, items: Sequence[Media | RemoteFile], provider: str, model: str
    ) -> dict[str, Any]:
        blobs = await store_outputs(
            self.blobs, self.http, f"{job.tenant}/{job.id}", items,
            max_bytes=self.settings.max_output_bytes, provider=provider, model=model,
        )  # fmt: skip
        return {"audio": blobs[0]} if job.type == "speech" else {_MEDIA_OUTPUT_KEY[job.type]: blobs}

    async def _delete_blobs(self, output: dict[str, Any]) -> None:
        for value in output.values():
            for blob in value if isinstance(value, list) else [value]:
                if isinstance(blob, dict) and "key" in blob:
                    await self.blobs.delete(blob["key"])

    async def _fail(self, job: Job, error: AijobsError, attempts: list[dict[str, Any]]) -> None:
        error_fields = {"code": error.code, "message": error.message}
        fields: dict[str, Any] = {"error": error_fields, "attempts": attempts}
        if job.route is None and (route := ledger.route_tried(attempts)) is not None:
            fields["route"] = route
        now = time.time()
        entry = ledger.entry(job, JobStatus.FAILED, attempts=attempts, error_code=error.code, finished_at=now)
        await self.store.transition(
            job.id, JobStatus.FAILED, allowed_from={JobStatus.RUNNING}, fields=fields, ledger=entry, now=now
        )

    async def export_ledger(self, today: str | None = None) -> list[str]:
        """Export every finished UTC day still kept and not yet exported; one worker per day."""
        if not self.routing.config.ledger.export:
            return []
        today = today or ledger.day_of(time.time())
        keep = self.routing.config.ledger.records_days
        first = date.fromisoformat(today) - timedelta(days=keep)
        done = []
        for day in usage.days_between(first, date.fromisoformat(today) - timedelta(days=1)):
            if await self.redis.exists(Keys.ledger_exported(day)) or not await self.redis.exists(
                Keys.ledger(day)
            ):
                continue  # exported already, or nothing finished that day
            if not await self.redis.set(f"{Keys.ledger_exported(day)}:lock", "1", nx=True, ex=3600):
                continue  # another worker is on it
            stored = await usage.export_day(self.redis, self.blobs, day)
            log.info("exported the ledger of %s to %s (%d bytes)", day, stored.key, stored.bytes)
            done.append(day)
        return done

    async def recover(self, lanes: list[LaneName], older_than_s: float = RECOVERY_AGE_S) -> int:
        """Re-enqueue queued jobs that arq no longer holds (e.g. its payload expired with no worker).

        Records are written and enqueued in one script, so this is a backstop; jobs arq still holds
        are left alone, and arq dedups on the job id besides.
        """
        count = 0
        for lane in lanes:
            ids = await self.store.pending(lane, older_than_s=older_than_s)
            held = await self.queue.waiting(ids) if ids else set()
            for job_id in ids:
                if job_id not in held and await self.queue.enqueue(job_id, lane):
                    count += 1
        return count


async def run_job(ctx: dict[str, Any], job_id: str) -> None:
    """The arq task: carries only the job id."""
    runtime: Runtime = ctx["runtime"]
    await runtime.process(job_id, ctx.get("job_try", 1))


async def poll_task(ctx: dict[str, Any], job_id: str) -> None:
    """The arq task polling a media job's provider task once; it reschedules itself while pending."""
    runtime: Runtime = ctx["runtime"]
    with logs.bind(job_id=job_id):
        delay_s = await runtime.poller.poll(job_id)
    if delay_s is not None:
        raise Retry(defer=delay_s)
