"""Long-running provider tasks (video, async images): submit → poll → fetch, one small class per kind.

A task adapter's ``run(model, request)`` *submits*, so the Router retries and falls back over
submits exactly as over any other call; it returns a :class:`~aijobs.providers.base.Submitted`
holding the provider's task id and whatever polling needs later (a polling URL, the create path).
The worker writes that task onto the job record before the first poll, then polls it on its own
schedule until the task ends; outputs are downloaded into the BlobStore by the worker. ::

    run(model, request)  → Submitted(Task(id, data))       or raises a ProviderError;
                           a submit sent but unanswered     → SubmitUnknown (never resubmitted
                                                              elsewhere unless the feature opts in)
    poll(model, task)    → Poll(state, raw_status, progress, outputs, usage, error)
                           the poll call itself failing      → raises a ProviderError (the worker
                                                              polls again later, same task)
    cancel(model, task)  → True when the provider canceled the task; False when it cannot

Adapters translate only: they never sleep, retry, store media or touch Redis.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import httpx2
from pydantic import BaseModel

from aijobs import errors
from aijobs.providers import http
from aijobs.providers.base import NoOptions, ProviderContext, Submitted, Task
from aijobs.types.common import Media, RemoteFile, Usage

TaskState = Literal["queued", "running", "succeeded", "failed", "canceled"]
TERMINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "canceled"})


@dataclass(frozen=True, slots=True)
class Poll:
    """A task's state as one poll saw it.

    ``raw_status`` is the provider's own word (kept on the job's attempt); ``progress`` is 0..1 when
    the provider reports it. A succeeded poll carries the ``outputs`` and their ``usage`` (units:
    images, or seconds of audio/video; tokens where the provider bills them); a failed one an ``error``.
    """

    state: TaskState
    raw_status: str
    progress: float | None = None
    outputs: list[Media | RemoteFile] = field(default_factory=list)
    usage: Usage | None = None
    error: errors.ProviderError | None = None


class TaskAdapter:
    """Base of a long-running kind: subclasses implement ``submit`` and ``poll``, and ``cancel`` if they can.

    ``base_url`` comes from the provider's config (``base_url``), else the subclass's ``BASE_URL``.
    """

    Options: ClassVar[type[BaseModel]] = NoOptions
    BASE_URL: ClassVar[str] = ""

    def __init__(self, context: ProviderContext) -> None:
        self.context = context
        self.base_url = (context.config.base_url or self.BASE_URL).rstrip("/")
        self.timeouts = http.timeouts_for(context)

    async def run(self, model: str, request: Any) -> Submitted:
        """Submit ``request``; the Router calls this like any adapter's ``run``."""
        return Submitted(await self.submit(model, request), model)

    async def submit(self, model: str, request: Any) -> Task:
        raise NotImplementedError

    async def poll(self, model: str, task: Task) -> Poll:
        raise NotImplementedError

    async def cancel(self, model: str, task: Task) -> bool:
        """Cancel ``task`` upstream; ``False`` (the default) when the provider has no way to."""
        return False

    async def call(
        self,
        method: str,
        url: str,
        model: str,
        headers: Mapping[str, str],
        body: Mapping[str, Any] | None = None,
        *,
        submit: bool = False,
        embedded: bool = True,
    ) -> Any:
        """One JSON call to the provider (``url`` absolute, or a path under ``base_url``).

        ``embedded=False`` for reading a task record, whose ``error`` field is the task's outcome.
        """
        if not url.startswith(("http://", "https://")):
            url = self.base_url + url
        return await http.request_json(
            self.context, method, url, body, model=model, headers=headers, timeouts=self.timeouts,
            submit=submit, embedded=embedded,
        )  # fmt: skip

    def failed(self, model: str, raw_status: str, message: str, cls: type[errors.ProviderError]) -> Poll:
        """A failed poll whose error says ``message`` (scrubbed of keys)."""
        text = errors.scrub(f"{self.context.name} {model}: {message}", limit=300)
        return Poll("failed", raw_status, error=cls(text, provider=self.context.name, model=model))

    def gone(self, model: str, task: Task, raw_status: str = "not_found") -> Poll:
        """The provider no longer knows the task (it expired, or was deleted)."""
        return self.failed(
            model,
            raw_status,
            f"task {task.id} no longer exists upstream (expired?)",
            errors.ProviderUnavailable,
        )

    def bad(self, model: str, what: str, data: Any = None) -> errors.ProviderBadResponse:
        """An answer that does not have the documented shape."""
        return errors.ProviderBadResponse(
            f"{self.context.name} {model}: {what}", provider=self.context.name, model=model, status=200,
            body=str(data)[:500] if data is not None else "",
        )  # fmt: skip


def is_not_found(exc: errors.ProviderError) -> bool:
    """Whether a poll's error means the task is unknown upstream (404/410), not a passing failure."""
    return exc.status in (404, 410)


def headers_with_key(context: ProviderContext, header: str, prefix: str = "") -> dict[str, str]:
    """JSON headers with the provider's key in ``header`` (``x-key``, ``Authorization: Key …``)."""
    return http.json_headers(context, header, prefix)


def timeout_of(context: ProviderContext) -> httpx2.Timeout:
    return http.timeouts_for(context)
