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
import time
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import httpx2
from arq.worker import Retry
from redis.asyncio import Redis

from aijobs import ledger, logs, usage
from aijobs.errors import AijobsError, DeadlineExceeded, InternalError, NoRoute, ProviderError, StorageError
from aijobs.jobs import Job, JobStatus
from aijobs.providers.base import MediaResult
from aijobs.providers.registry import build_adapters
from aijobs.queue import JobQueue
from aijobs.routing import Routing
from aijobs.routing.breakers import Breakers
from aijobs.routing.budgets import Budgets
from aijobs.routing.config import LaneName
from aijobs.routing.policy import Feature
from aijobs.routing.router import Outcome, RouteFailed, Router
from aijobs.settings import Settings
from aijobs.storage import BlobStore, StoredBlob, open_blob_store
from aijobs.store import JobStore, Keys
from aijobs.types import INPUT_MODELS

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

    @classmethod
    async def start(cls, settings: Settings, routing: Routing, env: dict[str, str]) -> Runtime:
        redis = Redis.from_url(settings.redis_url)
        http = httpx2.AsyncClient(
            timeout=httpx2.Timeout(60.0, connect=5.0),
            limits=httpx2.Limits(max_connections=1000, max_keepalive_connections=200),
        )
        breakers = Breakers(redis, routing.config.breakers, routing.reachable())
        router = Router(build_adapters(routing, http, env), breakers=breakers)
        store = JobStore(redis, settings.job_ttl_s, *routing.config.ledger.ttls_s())
        queue = await JobQueue.connect(settings.redis_url)
        blobs = await open_blob_store(settings)
        budgets = Budgets(redis, routing.config.breakers.refresh_s)
        return cls(settings, routing, redis, store, queue, blobs, http, router, budgets)

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
        try:
            fields, target = await self._run_within_deadline(job, feature)
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

    async def _run_within_deadline(
        self, job: Job, feature: Feature | None
    ) -> tuple[dict[str, Any], tuple[str, str]]:
        """Route the job and store its media, all within the feature's deadline."""
        if feature is None:
            raise NoRoute(f"feature {job.feature!r} is no longer in the routing policy")
        request = INPUT_MODELS[job.type].model_validate(job.input)
        assert job.deadline_at is not None
        remaining_s = job.deadline_at - time.time()
        try:
            async with asyncio.timeout(max(0.0, remaining_s)):
                targets = await self.budgets.targets(feature)
                outcome = await self.router.run(feature, request, targets)
                return await self._success_fields(job, outcome), (
                    outcome.target.provider,
                    outcome.target.model,
                )
        except TimeoutError:
            deadline_s = self._deadline_s(feature)
            raise DeadlineExceeded(f"the job did not finish within its {deadline_s:g} s deadline") from None

    async def _success_fields(self, job: Job, outcome: Outcome) -> dict[str, Any]:
        result = outcome.result
        if isinstance(result, MediaResult):
            blobs = await self._store_media(job, result)
            output = {"audio": blobs[0]} if job.type == "speech" else {_MEDIA_OUTPUT_KEY[job.type]: blobs}
        else:
            output = result.output()
        route = outcome.route()
        route["model"] = result.model or route["model"]
        usage = result.usage.model_copy()
        target = outcome.target
        usage.cost_usd = self.routing.prices.cost_usd(target.provider, target.model, job.type, usage)
        attempts = [a.to_dict() for a in outcome.attempts]
        attempts[-1]["cost_usd"] = usage.cost_usd
        return {
            "output": output,
            "usage": usage.model_dump(),
            "attempts": [*job.attempts, *attempts],
            "route": route,
        }

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

    async def _requeue(self, job: Job, attempts: list[dict[str, Any]], delay_s: float) -> bool:
        fields = {"attempts": attempts, "deadline_at": repr(job.deadline_at), "requeues": job.requeues + 1}
        moved = await self.store.transition(job.id, JobStatus.QUEUED, fields=fields)
        if moved.ok:
            log.info("job %s: every target failed transiently; requeued for %.1f s", job.id, delay_s)
        return moved.ok

    async def _store_media(self, job: Job, result: MediaResult) -> list[dict[str, Any]]:
        blobs = []
        for i, media in enumerate(result.items):
            key = f"{job.tenant}/{job.id}/{i}.{media.extension}"
            try:
                stored: StoredBlob = await self.blobs.put(key, media.data, media.content_type)
            except Exception as exc:
                log.exception("job %s: storing %s failed", job.id, key)
                raise StorageError(f"could not store output {i}: {type(exc).__name__}") from exc
            blob: dict[str, Any] = stored.to_dict()
            for name in ("width", "height", "duration_s"):
                if getattr(media, name) is not None:
                    blob[name] = getattr(media, name)
            blobs.append(blob)
        return blobs

    async def _delete_blobs(self, output: dict[str, Any]) -> None:
        for value in output.values():
            for blob in value if isinstance(value, list) else [value]:
                if isinstance(blob, dict) and "key" in blob:
                    await self.blobs.delete(blob["key"])

    async def _fail(self, job: Job, error: AijobsError, attempts: list[dict[str, Any]]) -> None:
        fields = {"error": {"code": error.code, "message": error.message}, "attempts": attempts}
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
