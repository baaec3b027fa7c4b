"""Handing a batch to a provider's own batch API, for chat features that opt in (``provider_batch``).

The first target of the feature's route whose provider has ``batch_api`` takes the whole batch, if
it fits (``batch_max_lines``) and no line has run here yet. The driver (:mod:`aijobs.batchrun`) calls
:meth:`Handoff.step` on each tick until the provider's batch has ended and its results are in. Each
call does one stage and saves ``batch.remote`` (compare-and-set, so a stale tick cannot undo it)
before the next stage starts:

- ``upload``: the batch's lines become the provider's input file (line numbers as ``custom_id``);
- ``create``: the provider batch made from that file is looked up first, so a create whose answer
  was lost is never repeated into a second batch; a create the provider refuses (4xx) ends the
  handoff;
- ``wait``: polled every ``batch_poll_s``. When the batch here is cancelled or its window runs out,
  the provider batch is cancelled too (asked again until the provider answers), and still waited
  for: what it answered is kept;
- ``collect``: its output and error files are read into a hash of result lines by line number;
- ``collected``: done here. The driver then walks the lines as usual: a line with a result becomes
  a finished job (with its ledger entry, priced at ``batch_price_factor`` of the usual price); a line
  without one, or with an error worth retrying, runs here like any batch line.

``off`` means nothing was handed over (the upload failed or the create was refused): every line runs
here. A stage whose calls keep failing, or a cancelled provider batch that never ends, is given up
after ``GIVE_UP_POLLS`` polls' worth of time: the lines without a result then run here (or, when the
batch is ending, are reported as never run).

Memory: a handed-over batch is held whole while it is uploaded and while its results are read
(at most ``batch_max_lines``, 50,000 lines).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from aijobs import ledger
from aijobs.batches import Batch, BatchStore
from aijobs.batchlines import LineJob
from aijobs.errors import ProviderError
from aijobs.jobs import Job, JobStatus
from aijobs.keys import Keys
from aijobs.ledger import Entry
from aijobs.providers.base import Adapter
from aijobs.providers.openai import OpenAIChat
from aijobs.providers.openai_batch import LineResult, OpenAIBatches, RemoteBatch, line_number
from aijobs.queue import BATCH_LANE
from aijobs.routing.policy import Routing, Target
from aijobs.routing.router import Attempt
from aijobs.types.chat import ChatInput

log = logging.getLogger(__name__)

#: Result lines written to Redis per round trip while collecting.
COLLECT_CHUNK = 1000
#: One stage's calls at most (well inside the batch lane's job timeout).
STEP_TIMEOUT_S = 300.0
#: Polls' worth of failing calls, or of waiting for a cancelled batch to end, before giving up on it.
GIVE_UP_POLLS = 60


@dataclass(slots=True)
class Handoff:
    """Moves batches to and from providers' batch APIs (see the module docstring)."""

    routing: Routing
    #: Each provider with ``batch_api``, by name.
    apis: Mapping[str, OpenAIBatches]
    batches: BatchStore

    def target(self, batch: Batch) -> Target | None:
        """Where ``batch`` would be handed, or ``None`` when it runs here."""
        config = self.routing.config.features.get(batch.feature)
        feature = self.routing.features.get(batch.feature)
        if config is None or feature is None or not config.provider_batch or batch.type != "chat":
            return None
        if batch.expanded or batch.remote:  # lines have run here, or it was handed over once already
            return None
        for target in feature.targets:
            if target.provider in self.apis:
                limit = self.routing.config.providers[target.provider].batch_max_lines
                return target if batch.total <= limit else None
        return None

    def active(self, batch: Batch) -> bool:
        """Whether the driver must keep calling :meth:`step` before it walks the lines."""
        stage = batch.remote.get("stage")
        return stage not in ("collected", "off") and (stage is not None or self.target(batch) is not None)

    def wants_lines(self, batch: Batch) -> bool:
        return not batch.remote or batch.remote.get("stage") == "upload"

    async def step(self, batch: Batch, lines: list[tuple[int, LineJob]] | None, ending: bool) -> float:
        """Advance the handoff by one stage, saved before the next one starts; seconds until the driver
        should call again. ``lines`` (number, job input) are needed only while :meth:`wants_lines`."""
        remote = batch.remote
        if not remote:
            target = self.target(batch)
            assert target is not None
            remote.update(stage="upload", provider=target.provider, model=target.model, handed_at=time.time())
        stage, api = remote["stage"], self.apis.get(remote["provider"])
        now = time.time()
        if ending:
            remote.setdefault("ending_since", now)
        if api is None or now - remote.get("ending_since", now) > self._give_up_s(remote):
            # Its provider lost batch_api, or it never ended after a cancel: keep what was collected.
            log.error("batch %s: giving up on %s's batch %s", batch.id, remote["provider"], remote.get("id"))
            remote.update(stage="collected", lost=True)
        else:
            try:
                async with asyncio.timeout(STEP_TIMEOUT_S):
                    await self._stages[stage](self, batch, api, lines, ending)
                remote.pop("failing_since", None)
            except (ProviderError, TimeoutError) as exc:
                self._failed(batch, exc, now)
        if not await self.batches.set_remote(batch.id, remote):
            log.warning("batch %s: another tick moved its handoff on; this one stops", batch.id)
        if remote["stage"] == stage or remote["stage"] == "wait":
            return self._poll_s(remote)
        return 0.05

    def _failed(self, batch: Batch, exc: Exception, now: float) -> None:
        """A stage's call failed: an upload, or a create the provider refused, ends the handoff
        (nothing was made there); otherwise the stage is tried again, for a while."""
        remote = batch.remote
        status = exc.status if isinstance(exc, ProviderError) else None
        refused = status is not None and 400 <= status < 500 and status != 429
        log.warning("batch %s: %s batch API, %s: %s", batch.id, remote["provider"], remote["stage"], exc)
        if remote["stage"] == "upload" or (remote["stage"] == "create" and refused):
            remote.update(stage="off", error=getattr(exc, "code", "provider_timeout"))
            return
        since = remote.setdefault("failing_since", now)
        if now - since > self._give_up_s(remote):
            # "create" with unknown outcomes all along: nothing was found there, so run the lines here.
            remote.update(stage="off" if remote["stage"] == "create" else "collected", lost=True)

    def _poll_s(self, remote: dict[str, Any]) -> float:
        return self.routing.config.providers[remote["provider"]].batch_poll_s

    def _give_up_s(self, remote: dict[str, Any]) -> float:
        return GIVE_UP_POLLS * self._poll_s(remote)

    async def _upload(
        self, batch: Batch, api: OpenAIBatches, lines: list[tuple[int, LineJob]] | None, ending: bool
    ) -> None:
        assert lines is not None
        model = batch.remote["model"]
        content = b"".join(
            api.request_line(number, model, ChatInput.model_validate(line.input)) for number, line in lines
        )
        batch.remote.update(input_file_id=await api.upload(content, model), stage="create")

    async def _create(self, batch: Batch, api: OpenAIBatches, lines: Any, ending: bool) -> None:
        """Make the provider batch, unless an earlier try did (its outcome unknown): never two."""
        remote, model = batch.remote, batch.remote["model"]
        made = await api.find(remote["input_file_id"], model)
        if made is None:
            made = await api.create(remote["input_file_id"], model, {"aijobs_batch": batch.id})
        self._saw(remote, made)
        remote["stage"] = "wait"

    async def _wait(self, batch: Batch, api: OpenAIBatches, lines: Any, ending: bool) -> None:
        remote, model = batch.remote, batch.remote["model"]
        if ending and not remote.get("cancel_sent"):
            try:
                self._saw(remote, await api.cancel(remote["id"], model))
            except ProviderError as exc:
                if exc.status is None or exc.status >= 500 or exc.status == 429:
                    raise  # asked again next tick
                # Refused: it has ended there already; the poll below says how.
            remote["cancel_sent"] = True
        self._saw(remote, await api.get(remote["id"], model))
        if remote["status"] in ("completed", "expired", "cancelled", "failed"):
            remote.update(stage="collect", ended_at=time.time())

    async def _collect(self, batch: Batch, api: OpenAIBatches, lines: Any, ending: bool) -> None:
        """Both result files into the answers hash (a retried collect writes the same lines again)."""
        remote, model = batch.remote, batch.remote["model"]
        key = Keys.batch_answers(batch.id)
        for file_id in (remote.get("output_file_id"), remote.get("error_file_id")):
            if not file_id:
                continue
            pairs: dict[str, bytes] = {}
            for raw in (await api.download(file_id, model)).split(b"\n"):
                number = line_number(raw)
                if number is not None:
                    pairs[str(number)] = raw
                elif raw.strip():  # its line runs here
                    log.warning("batch %s: an unreadable result line from %s", batch.id, remote["provider"])
                if len(pairs) >= COLLECT_CHUNK:
                    await self.batches.redis.hset(key, mapping=pairs)  # type: ignore[misc]
                    pairs = {}
            if pairs:
                await self.batches.redis.hset(key, mapping=pairs)  # type: ignore[misc]
        await self.batches.redis.expire(key, self.batches.kept_s(batch))
        remote["stage"] = "collected"

    _stages: ClassVar[dict[str, Any]] = {
        "upload": _upload, "create": _create, "wait": _wait, "collect": _collect,
    }  # fmt: skip

    @staticmethod
    def _saw(remote: dict[str, Any], made: RemoteBatch) -> None:
        remote.update(
            id=made.id, status=made.status, output_file_id=made.output_file_id,
            error_file_id=made.error_file_id, total=made.total, completed=made.completed, failed=made.failed,
        )  # fmt: skip

    async def answers(self, batch: Batch, numbers: list[int]) -> dict[int, LineResult]:
        """The provider's result for each of ``numbers`` that has one worth keeping: an answer, or an
        error that would fail here too. Lines left out run here."""
        api, model = self.apis.get(batch.remote.get("provider", "")), batch.remote.get("model", "")
        if batch.remote.get("stage") != "collected" or api is None or not numbers:
            return {}  # a provider that lost batch_api since cannot read its results
        raws = await self.batches.redis.hmget(Keys.batch_answers(batch.id), [str(n) for n in numbers])  # type: ignore[misc]
        found = {}
        for number, raw in zip(numbers, raws, strict=True):
            if raw is None:
                continue
            result = api.result(raw, model)
            if result.error is None or not (result.error.retry or result.error.fallback):
                found[number] = result
        return found

    def record(self, batch: Batch, job_id: str, line: LineJob, result: LineResult) -> tuple[Job, Entry]:
        """The finished job of a line the provider answered (or refused), with its ledger entry."""
        remote = batch.remote
        provider, model = remote["provider"], remote["model"]
        started, ended = float(remote["handed_at"]), float(remote.get("ended_at") or time.time())
        job = Job(
            job_id, batch.tenant, batch.type, batch.feature, BATCH_LANE, JobStatus.SUCCEEDED, started,
            line.input, {"batch_id": batch.id, **line.metadata}, started_at=started, finished_at=ended,
        )  # fmt: skip
        attempt = Attempt(provider, model, started, (ended - started) * 1000).to_dict()
        attempt["provider_batch"] = remote["id"]
        job.attempts = [attempt]
        job.route = {"provider": provider, "model": model, "provider_batch": remote["id"],
                     "fallback_path": ledger.fallback_path(job.attempts)}  # fmt: skip
        if result.answer is not None:
            usage = result.answer.usage.model_copy()
            cost = self.routing.prices.cost_usd(provider, model, batch.type, usage)
            factor = self.routing.config.providers[provider].batch_price_factor
            usage.cost_usd = attempt["cost_usd"] = cost * factor if cost is not None else None
            job.output, job.usage = result.answer.output(), usage.model_dump()
            job.route["model"] = result.answer.model or model
            error_code = None
        else:
            assert result.error is not None
            job.status = JobStatus.FAILED
            job.error = {"code": result.error.code, "message": result.error.message}
            attempt.update(outcome="error", error_code=result.error.code)
            error_code = result.error.code
        entry = ledger.entry(
            job, job.status, attempts=job.attempts, usage=job.usage, target=(provider, model),
            error_code=error_code, finished_at=ended,
        )  # fmt: skip
        return job, entry

    async def forget(self, batch: Batch) -> None:
        """Drop the result lines once every line has its job."""
        await self.batches.redis.delete(Keys.batch_answers(batch.id))


def batch_apis(routing: Routing, adapters: Mapping[tuple[str, str], Adapter]) -> dict[str, OpenAIBatches]:
    """The batch API of each provider with ``batch_api``, built on its chat adapter."""
    apis = {}
    for name, provider in routing.providers.items():
        chat = adapters.get((name, "chat"))
        if provider.config.batch_api and isinstance(chat, OpenAIChat):
            apis[name] = OpenAIBatches(chat)
    return apis
