"""Long-running provider tasks after their submit: recorded, polled on their own schedule, never paid twice.

A media job whose route reaches a task adapter runs as separate short arq jobs on its lane:

1. ``run_job`` marks the record ``task: {"state": "submitting"}``, then routes the submit (retries
   and fallback happen only here, before any task id exists). The task id, and the first poll
   (one arq job, ``poll:{job_id}``, deferred ``poll_interval_s``), are written in one atomic step.
2. ``poll_task`` polls that one task once and, while it is pending, reschedules itself with backoff
   (times 1.5 up to ``poll_interval_cap_s``); no worker slot is held while the provider renders. A
   per-provider semaphore caps concurrent polls in a process.
3. On success the outputs are copied into the BlobStore and the job finishes with its ledger entry;
   on failure, or past ``task_timeout_s`` (the task is canceled upstream then), the job fails.

Never paying twice: a worker that dies mid-submit leaves ``submitting`` on the record, with the
route's task targets and the name the submit gave the task (the job's id). The job's next delivery
(:meth:`Poller.resume_submit`) asks each of those targets whose provider lets tasks be named
(``names_tasks``: Kling's ``external_task_id``) for a task by that name: one found is adopted, exactly
as if its submit had answered (task on the record, first poll scheduled, in one step); none found at
any of them means no task was created, so the job is submitted again. When a target cannot be asked
(its provider has no names, or the lookup fails), the task may exist: the job fails as
``provider_timeout`` instead of submitting again, unless the feature sets ``resubmit_unknown``. A worker
that dies after the submit leaves a task id and a scheduled poll, so the next worker polls that same
task.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

from aijobs import ledger
from aijobs.errors import AijobsError, NoRoute, ProviderError, ProviderTimeout
from aijobs.jobs import Job, JobStatus
from aijobs.media import OutputDownloadFailed
from aijobs.providers.base import Adapter, Submitted, Task
from aijobs.providers.tasks import Poll, TaskAdapter, is_not_found
from aijobs.queue import poll_delivery
from aijobs.routing import Routing
from aijobs.routing.config import TaskConfig
from aijobs.routing.policy import Target
from aijobs.routing.router import Outcome
from aijobs.store import JobStore
from aijobs.types import INPUT_MODELS

log = logging.getLogger(__name__)

POLL_GROWTH = 1.5
SUBMITTING = "submitting"


class Finisher(Protocol):
    """What the worker lends the poller to end a job (the same paths every job ends by)."""

    async def finish_media(self, job: Job, poll: Poll, task: dict[str, Any]) -> None: ...

    async def fail(self, job: Job, error: AijobsError, attempts: list[dict[str, Any]]) -> None: ...


def submits_tasks(adapter: Adapter) -> bool:
    return isinstance(adapter, TaskAdapter)


class Poller:
    """Records submitted tasks and polls them; one per worker process."""

    def __init__(
        self,
        store: JobStore,
        routing: Routing,
        adapters: dict[tuple[str, str], Adapter],
        finisher: Finisher,
    ) -> None:
        self.store = store
        self.routing = routing
        self.adapters = adapters
        self.finisher = finisher
        self._slots: dict[str, asyncio.Semaphore] = {}

    def config(self, provider: str) -> TaskConfig:
        return self.routing.providers[provider].config.tasks

    async def mark_submitting(self, job: Job, targets: Sequence[Target]) -> bool:
        """Note on the record that a submit to one of ``targets`` may go out now, naming its task after
        the job; ``False`` if the job is no longer running."""
        job.task = {
            "state": SUBMITTING, "at": time.time(), "name": job.id,
            "targets": [[t.provider, t.model] for t in targets],
        }  # fmt: skip
        return (await self.store.update(job.id, JobStatus.RUNNING, {"task": job.task})).ok

    async def started(self, job: Job, outcome: Outcome, attempts: list[dict[str, Any]]) -> None:
        """Put the submitted task on the record with its first poll scheduled, atomically."""
        assert isinstance(outcome.result, Submitted)
        attempts[-1]["task_id"] = outcome.result.task.id
        await self._record(job, outcome.target, outcome.result.task, attempts, outcome.route())

    async def resume_submit(self, job: Job, resubmit_unknown: bool) -> bool:
        """A previous run of ``job`` died while submitting: settle what it may have left upstream.

        ``True``: submit now (no task was created, or the feature accepts paying twice). ``False``:
        done here, the task found upstream adopted, or the job failed (a task may exist, unfindable).
        """
        mark = job.task or {}
        name = mark.get("name")
        targets = [Target(str(p), str(m)) for p, m in mark.get("targets") or []]
        searched = bool(name and targets)  # every target asked, and none had the task
        for target in targets if name else []:
            adapter = self.adapters.get((target.provider, job.type))
            if not isinstance(adapter, TaskAdapter) or not adapter.names_tasks:
                searched = False
                continue
            try:
                request = INPUT_MODELS[job.type].model_validate(job.input)
                task = await adapter.find(target.model, request, str(name))
            except ProviderError as error:
                log.warning("job %s: looking for its %s task failed (%s)", job.id, target, error.code)
                searched = False
                continue
            if task is not None:
                await self._adopt(job, target, task, mark)
                return False
        if searched:
            log.info("job %s: the submit a stopped worker left never reached its provider", job.id)
            return True
        if resubmit_unknown:
            return True
        message = (
            "a worker stopped while submitting this job's task; it may exist upstream, so it was not "
            "submitted again (a feature with resubmit_unknown = true would)"
        )
        only = targets[0] if len(targets) == 1 else Target("", "")
        await self.finisher.fail(
            job, ProviderTimeout(message, provider=only.provider, model=only.model), job.attempts
        )
        return False

    async def _adopt(self, job: Job, target: Target, task: Task, mark: dict[str, Any]) -> None:
        """Take over the task a stopped worker submitted, as if its submit had answered."""
        attempt = {
            "provider": target.provider, "model": target.model, "started_at": mark.get("at", time.time()),
            "latency_ms": 0.0, "outcome": "ok", "error_code": None, "retry_after_s": None,
            "ttft_ms": None, "task_id": task.id, "adopted": True,
        }  # fmt: skip
        route = {"provider": target.provider, "model": target.model, "fallback_path": [str(target)]}
        log.info("job %s: found its %s task %s upstream; adopting it", job.id, target, task.id)
        await self._record(job, target, task, [*job.attempts, attempt], route)

    async def _record(
        self, job: Job, target: Target, task: Task, attempts: list[dict[str, Any]], route: dict[str, Any]
    ) -> None:
        config = self.config(target.provider)
        job.task = {
            "state": "submitted", "provider": target.provider, "model": target.model,
            "id": task.id, "data": task.data, "submitted_at": time.time(),
            "polls": 0, "errors": 0, "raw_status": None, "progress": None,
        }  # fmt: skip
        fields = {"task": job.task, "attempts": attempts, "route": route}
        deliver = poll_delivery(job.id, job.lane, config.poll_interval_s)
        written = await self.store.update(job.id, JobStatus.RUNNING, fields, deliver)
        if written.ok:
            log.info("job %s: %s task %s submitted", job.id, target, task.id)
            return
        job.attempts = attempts
        if written.previous is JobStatus.CANCELED:  # canceled while submitting
            await self.cancel_upstream(job)

    async def poll(self, job_id: str) -> float | None:
        """Poll ``job_id``'s task once; the delay until the next poll, or ``None`` when it is over."""
        job = await self.store.get(job_id)
        if job is None or not job.task or "id" not in job.task:
            return None
        if job.status is JobStatus.CANCELED:
            await self.cancel_upstream(job)
            return None
        if job.status is not JobStatus.RUNNING:
            return None
        provider, model = job.task["provider"], job.task["model"]
        adapter = self.adapters.get((provider, job.type))
        if not isinstance(adapter, TaskAdapter) or provider not in self.routing.providers:
            await self.finisher.fail(
                job, NoRoute(f"provider {provider!r} is no longer configured"), job.attempts
            )
            return None
        config = self.config(provider)
        if time.time() > job.task["submitted_at"] + config.task_timeout_s:
            await self._timed_out(job, adapter, config)
            return None
        slot = self._slots.setdefault(provider, asyncio.Semaphore(config.max_concurrent_polls))
        async with slot:
            try:
                result = await adapter.poll(model, _task(job))
            except ProviderError as error:
                return await self._poll_failed(job, error, config)
        return await self._advance(job, result, config)

    async def _advance(self, job: Job, poll: Poll, config: TaskConfig) -> float | None:
        task = job.task
        assert task is not None
        before = (task.get("state"), task.get("progress"))
        task.update(state=poll.state, raw_status=poll.raw_status, polls=task["polls"] + 1, errors=0)
        if poll.progress is not None:
            task["progress"] = round(max(0.0, min(1.0, poll.progress)), 4)
        if poll.state in ("queued", "running"):
            # A job.progress event only when there is news: followers are not told of every poll.
            news = (task["state"], task.get("progress")) != before
            progress = (task.get("progress") or 0.0) if news else None
            written = await self.store.update(job.id, JobStatus.RUNNING, {"task": task}, progress=progress)
            return self._interval_s(task, config) if written.ok else 0.0  # canceled: handle it now
        self._settle_attempt(job, task)
        if poll.state == "succeeded":
            try:
                await self.finisher.finish_media(job, poll, task)
            except OutputDownloadFailed as failed:
                return await self._poll_failed(job, failed, config)
            return None
        error = poll.error or ProviderError(
            f"{task['provider']} ended the task as {poll.raw_status}", provider=task["provider"],
            model=task["model"],
        )  # fmt: skip
        await self.finisher.fail(job, error, job.attempts)
        return None

    async def _poll_failed(self, job: Job, error: ProviderError, config: TaskConfig) -> float | None:
        task = job.task
        assert task is not None
        task["errors"] = task.get("errors", 0) + 1
        task["last_error"] = error.code
        if is_not_found(error) or not error.retry or task["errors"] >= config.max_poll_errors:
            self._settle_attempt(job, task)
            await self.finisher.fail(job, error, job.attempts)
            return None
        log.warning("job %s: polling its task failed (%s); polling again later", job.id, error.code)
        written = await self.store.update(job.id, JobStatus.RUNNING, {"task": task})
        delay_s = self._interval_s(task, config)
        if error.retry_after_s:
            delay_s = max(delay_s, min(error.retry_after_s, config.poll_interval_cap_s * 4))
        return delay_s if written.ok else 0.0

    async def _timed_out(self, job: Job, adapter: TaskAdapter, config: TaskConfig) -> None:
        task = job.task
        assert task is not None
        task["upstream_canceled"] = await self._cancel(adapter, task)
        self._settle_attempt(job, task)
        error = ProviderTimeout(
            f"{task['provider']} did not finish task {task['id']} within {config.task_timeout_s:g} s",
            provider=task["provider"], model=task["model"],
        )  # fmt: skip
        await self.finisher.fail(job, error, job.attempts)

    async def cancel_upstream(self, job: Job) -> None:
        """A canceled job's task: cancel it upstream where the provider can, and record the job once."""
        task = job.task or {}
        adapter = self.adapters.get((task.get("provider", ""), job.type))
        if isinstance(adapter, TaskAdapter) and "id" in task and "upstream_canceled" not in task:
            task["upstream_canceled"] = await self._cancel(adapter, task)
            task["state"] = "canceled"
        entry = ledger.entry(job, JobStatus.CANCELED, attempts=job.attempts, error_code="gateway_canceled")
        await self.store.transition(
            job.id, JobStatus.CANCELED, allowed_from={JobStatus.CANCELED},
            fields={"task": task, "attempts": job.attempts}, ledger=entry,
        )  # fmt: skip

    async def _cancel(self, adapter: TaskAdapter, task: dict[str, Any]) -> bool:
        try:
            return await adapter.cancel(task["model"], Task(task["id"], task.get("data") or {}))
        except Exception as exc:  # best effort: the job ends either way
            log.warning("canceling %s task %s upstream failed: %s", task["provider"], task["id"], exc)
            return False

    def _interval_s(self, task: dict[str, Any], config: TaskConfig) -> float:
        return float(min(config.poll_interval_cap_s, config.poll_interval_s * POLL_GROWTH ** task["polls"]))

    def _settle_attempt(self, job: Job, task: dict[str, Any]) -> None:
        """Keep the provider's own last word and the poll count on the attempt that submitted the task."""
        for attempt in reversed(job.attempts):
            if attempt.get("task_id") == task["id"]:
                attempt.update(
                    raw_status=task.get("raw_status"), polls=task["polls"],
                    task_s=round(time.time() - task["submitted_at"], 3),
                )  # fmt: skip
                return


def _task(job: Job) -> Task:
    assert job.task is not None
    return Task(job.task["id"], job.task.get("data") or {})


def unknown_submit(job: Job) -> bool:
    """Whether a previous run of ``job`` died while submitting (its task may exist upstream)."""
    return job.task is not None and job.task.get("state") == SUBMITTING
