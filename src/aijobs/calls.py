"""Calls: jobs run inside the request that asked for them, recorded like any other job.

The OpenAI-compatible surface answers in the same HTTP exchange, so a queue hop would only add
latency. A call is routed by the API process's own Router, then written once it has finished: the
record, its terminal event and its ledger entry in one script (:meth:`JobStore.record`). It is
then visible at ``GET /v1/jobs/{id}``, counted in usage and budgets, and delivered to the tenant's
webhooks, like a job a worker ran.

A call that asks for ``choices > 1`` runs its route that many times at once, on any provider
(one job; attempts and usage are summed). A call that is cancelled (its caller went away) is
recorded as ``canceled`` with what it spent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from aijobs import ledger
from aijobs.errors import AijobsError, Canceled, DeadlineExceeded, InternalError
from aijobs.jobs import Job, JobStatus
from aijobs.prices import PriceBook
from aijobs.routing import Routing
from aijobs.routing.budgets import Budgets
from aijobs.routing.policy import Feature, Target
from aijobs.routing.router import Attempt, Outcome, RouteFailed, Router, Stream
from aijobs.store import JobStore
from aijobs.types.common import Usage

log = logging.getLogger(__name__)

#: Where a media job's output keeps its blobs: a list of them, or one.
_MEDIA_BLOBS = {"image": "images", "speech": "audio", "video": "videos"}


def priced_fields(
    prices: PriceBook,
    job_type: str,
    output: dict[str, Any],
    usage: Usage,
    attempts: list[dict[str, Any]],
    route: dict[str, Any],
    target: Target,
) -> dict[str, Any]:
    """A succeeded job's record fields, its usage priced for ``target`` (the last attempt's cost too).

    Media the provider reported no usage for are counted from the output (the images stored, the
    seconds of audio or video the adapter read), marked ``estimated``; with nothing to count from, the
    cost is unknown (``None``), never free.
    """
    usage = _media_usage(job_type, output, usage)
    usage.cost_usd = prices.cost_usd(target.provider, target.model, job_type, usage)
    attempts[-1]["cost_usd"] = usage.cost_usd
    return {"output": output, "usage": usage.model_dump(), "attempts": attempts, "route": route}


def _media_usage(job_type: str, output: dict[str, Any], usage: Usage) -> Usage:
    """``usage`` (a copy), with a media job's units counted from ``output`` when it counts nothing."""
    usage = usage.model_copy()
    if job_type not in _MEDIA_BLOBS or usage.units or usage.input_tokens or usage.output_tokens:
        return usage
    found = output.get(_MEDIA_BLOBS[job_type])
    blobs = [b for b in (found if isinstance(found, list) else [found]) if isinstance(b, dict)]
    if job_type == "image":
        usage.units = float(len(blobs))
    elif blobs and all(isinstance(b.get("duration_s"), int | float) for b in blobs):
        usage.units = float(sum(b["duration_s"] for b in blobs))
    usage.estimated = True
    return usage


@dataclass(slots=True)
class Call:
    """A finished call: the record as written, and the outcome of each choice (none when it failed)."""

    job: Job
    outcomes: list[Outcome] = field(default_factory=list)
    error: AijobsError | None = None
    #: The longest ``Retry-After`` an upstream asked for, when the call failed on rate limits.
    retry_after_s: float | None = None


class Calls:
    """Runs calls on this process's Router and records them (see the module docstring)."""

    def __init__(self, routing: Routing, store: JobStore, router: Router, budgets: Budgets) -> None:
        self.routing = routing
        self.store = store
        self.router = router
        self.budgets = budgets

    def new_job(
        self, tenant: str, feature: Feature, request: BaseModel, metadata: dict[str, str] | None = None
    ) -> Job:
        """The record of a call about to run (nothing is written until it has finished)."""
        now = time.time()
        job_input = request.model_dump(mode="json", by_alias=True, exclude_none=True)
        return Job(self.store.new_id(now), tenant, feature.type, feature.name, feature.lane,
                   JobStatus.RUNNING, now, job_input, metadata or {}, started_at=now, runs=1)  # fmt: skip

    async def run(
        self,
        job: Job,
        feature: Feature,
        request: BaseModel,
        *,
        choices: int = 1,
        streams: list[Stream] | None = None,
    ) -> Call:
        """Route ``request`` under ``feature`` within its deadline; record and return the finished call.

        With ``streams`` (one per choice), chat answers are handed over as they arrive. Each choice
        has its own list of attempts, so what was called is recorded however the call ends.
        """
        tries: list[list[Attempt]] = [[] for _ in range(choices)]
        try:
            outcomes, error = await self._route(feature, request, streams, tries)
        except asyncio.CancelledError:
            gone = Call(job, error=Canceled("the caller went away before the answer was complete"))
            await asyncio.shield(self._finish(gone, _flat(tries), JobStatus.CANCELED, []))
            raise
        if error is None:
            call, status = Call(job, outcomes), JobStatus.SUCCEEDED
        else:
            retry_after = [a.retry_after_s for a in _flat(tries) if a.retry_after_s]
            call = Call(job, error=error, retry_after_s=max(retry_after) if retry_after else None)
            status = JobStatus.FAILED
        # Shielded: a caller leaving now (a stream's last byte sent) must not leave the call unrecorded.
        await asyncio.shield(self._finish(call, _flat(tries), status, outcomes))
        return call

    async def _route(
        self, feature: Feature, request: BaseModel, streams: list[Stream] | None, tries: list[list[Attempt]]
    ) -> tuple[list[Outcome], AijobsError | None]:
        """Every choice's outcome that succeeded, and the first failure (``None`` when all succeeded)."""
        targets = await self.budgets.targets(feature)
        deadline_s = feature.deadline_s or self.routing.config.lane(feature.lane).job_timeout_s
        if len(tries) == 1:  # the usual call: routed in this task, with no task to schedule and await
            stream = streams[0] if streams else None
            try:
                async with asyncio.timeout(deadline_s):
                    return [await self.router.run(feature, request, targets, stream, tries[0])], None
            except TimeoutError:
                return [], _late(deadline_s)
            except Exception as exc:
                return [], _as_error(exc)
        runs = [
            asyncio.ensure_future(
                self.router.run(feature, request, targets, streams[i] if streams else None, attempts)
            )
            for i, attempts in enumerate(tries)
        ]
        try:
            async with asyncio.timeout(deadline_s):
                await asyncio.wait(runs)
        except TimeoutError:
            error: AijobsError | None = _late(deadline_s)
        else:
            error = None
        finally:
            for run in runs:
                run.cancel()
            await asyncio.wait(runs)  # cut-off attempts have recorded how they ended
        outcomes = [run.result() for run in runs if _succeeded(run)]
        for run in runs:
            if error is None and run.done() and not run.cancelled() and run.exception() is not None:
                error = _as_error(run.exception())
        return outcomes, error

    async def _finish(
        self, call: Call, attempts: list[Attempt], status: JobStatus, outcomes: list[Outcome]
    ) -> None:
        """Write the record; the usage of every choice that finished is priced at its own target."""
        job = call.job
        job.status, job.finished_at = status, time.time()
        job.attempts = [a.to_dict() for a in attempts]
        target = None
        if outcomes:
            first = outcomes[0]
            target = first.target
            job.usage = self._priced(job.type, outcomes, attempts, job.attempts).model_dump()
        if call.outcomes:
            first = call.outcomes[0]
            job.output, job.route = _output(call.outcomes), first.route()
            job.route["model"] = getattr(first.result, "model", "") or first.target.model
        if call.error is not None:
            job.error = {"code": call.error.code, "message": call.error.message}
        entry = ledger.entry(
            job, status, attempts=job.attempts, usage=job.usage,
            target=(target.provider, target.model) if target else None,
            error_code=call.error.code if call.error else None, finished_at=job.finished_at,
        )  # fmt: skip
        await self.store.record(job, entry)

    def _priced(
        self, job_type: str, outcomes: list[Outcome], attempts: list[Attempt], records: list[dict[str, Any]]
    ) -> Usage:
        """The choices' usage summed and priced, each at its own target; unknown if any choice's
        price is. Each answering attempt's record carries its own cost."""
        total = _usage(outcomes)
        costs = []
        for outcome in outcomes:
            usage: Usage = outcome.result.usage  # type: ignore[union-attr]  # chat, embed or rerank
            target = outcome.target
            cost = self.routing.prices.cost_usd(target.provider, target.model, job_type, usage)
            answered = next(i for i, a in enumerate(attempts) if a is outcome.attempts[-1])
            records[answered]["cost_usd"] = cost
            costs.append(cost)
        total.cost_usd = None if None in costs else sum(c for c in costs if c is not None)
        return total


def _flat(tries: list[list[Attempt]]) -> list[Attempt]:
    return [attempt for attempts in tries for attempt in attempts]


def _succeeded(run: asyncio.Future[Outcome]) -> bool:
    return run.done() and not run.cancelled() and run.exception() is None


def _late(deadline_s: float) -> DeadlineExceeded:
    return DeadlineExceeded(f"the call did not finish within its {deadline_s:g} s deadline")


def _as_error(exc: BaseException | None) -> AijobsError:
    """A choice's failure as the error to report: a route's last error, or an unexpected one."""
    if isinstance(exc, RouteFailed):
        return exc.error
    if isinstance(exc, AijobsError):
        return exc
    log.error("a call's route raised unexpectedly", exc_info=exc)
    return InternalError("unexpected error while routing the call")


def _output(outcomes: list[Outcome]) -> dict[str, Any]:
    """The job's output: the first choice's, plus every choice's when there are several."""
    results: list[Any] = [o.result for o in outcomes]  # chat, embed or rerank results
    output: dict[str, Any] = results[0].output()
    if len(results) > 1:
        output["choices"] = [result.output() for result in results]
    return output


def _usage(outcomes: list[Outcome]) -> Usage:
    usages: list[Usage] = [o.result.usage for o in outcomes]  # type: ignore[union-attr]
    total = usages[0].model_copy()
    for usage in usages[1:]:
        for name in ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens", "units"):
            setattr(total, name, getattr(total, name) + getattr(usage, name))
        total.estimated = total.estimated or usage.estimated
    return total
