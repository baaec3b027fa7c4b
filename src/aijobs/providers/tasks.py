"""Long-running provider tasks (video, async images): submit → poll → fetch, one small class per kind.

A task adapter's ``run(model, request)`` *submits*, so the Router retries and falls back over
submits exactly as over any other call; it returns a :class:`~aijobs.providers.base.Submitted`
holding the provider's task id and whatever polling needs later (a polling URL, the create path).
The worker writes that task onto the job record before the first poll, then polls it on its own
schedule until the task ends; outputs are downloaded into the BlobStore by the worker. ::

    run(model, request, name)
                         → Submitted(Task(id, data))       or raises a ProviderError;
                           a submit sent but unanswered, or → SubmitUnknown (never resubmitted
                           answered 2xx with a body the       elsewhere unless the feature opts in)
                           adapter cannot read (no id, not
                           JSON): the task may exist
    find(model, request, name)
                         → the Task submitted under ``name``, or None when the provider has none
                           (adapters with ``names_tasks`` only: their submit sends ``name``)
    poll(model, task)    → Poll(state, raw_status, progress, outputs, usage, error)
                           the poll call itself failing      → raises a ProviderError (the worker
                                                              polls again later, same task)
    cancel(model, task)  → True when the provider canceled the task; False when it cannot

``name`` is the job's id. Where a provider lets the caller name a task (Kling's ``external_task_id``),
the adapter sends it and sets ``names_tasks``; after a worker died mid-submit, the next run asks
``find`` whether the task exists and adopts it instead of paying for a second one. The Router calls
every adapter as ``run(model, request)``, so the worker hands the name over by running the route
inside :func:`naming` (a context variable, local to the job's own asyncio task); ``run`` passes it to
``submit`` explicitly.

The 2xx rule is enforced here, once, for every adapter: any :class:`~aijobs.errors.ProviderBadResponse`
with a 2xx status that ``submit`` raises (the answer came, but the adapter could not read a task out
of it) becomes a :class:`~aijobs.errors.SubmitUnknown`, never retried or sent elsewhere.

Adapters translate only: they never sleep, retry, store media or touch Redis.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
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
#: The name submits made in this context give their tasks (see :func:`naming`).
_TASK_NAME: ContextVar[str | None] = ContextVar("aijobs_task_name", default=None)


@contextlib.contextmanager
def naming(name: str) -> Iterator[None]:
    """Within this block, task submits name their tasks ``name`` (the job's id) where they can."""
    token = _TASK_NAME.set(name)
    try:
        yield
    finally:
        _TASK_NAME.reset(token)


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
    #: ``submit`` sends ``name`` to the provider as the task's own name, and ``find`` looks it up.
    names_tasks: ClassVar[bool] = False

    def __init__(self, context: ProviderContext) -> None:
        self.context = context
        self.base_url = (context.config.base_url or self.BASE_URL).rstrip("/")
        self.timeouts = http.timeouts_for(context)

    async def run(self, model: str, request: Any, name: str | None = None) -> Submitted:
        """Submit ``request``, named ``name`` (else the one :func:`naming` set) where the provider
        allows; the Router calls this like any adapter's ``run``. A 2xx answer the adapter could not
        read is a SubmitUnknown."""
        try:
            task = await self.submit(model, request, name if name is not None else _TASK_NAME.get())
        except errors.ProviderBadResponse as exc:
            if exc.status is None or not 200 <= exc.status < 300:
                raise
            raise errors.SubmitUnknown(
                f"{exc.message}; it answered the submit with {exc.status}, so the task may exist upstream "
                "and is not submitted again",
                provider=exc.provider, model=exc.model, status=exc.status, body=exc.body_excerpt,
            ) from None  # fmt: skip
        return Submitted(task, model)

    async def submit(self, model: str, request: Any, name: str | None = None) -> Task:
        """Create the task; ``name`` is for adapters that set ``names_tasks`` (others ignore it)."""
        raise NotImplementedError

    async def find(self, model: str, request: Any, name: str) -> Task | None:
        """The task submitted for ``request`` under ``name``; ``None`` when the provider has none.

        Only adapters that set ``names_tasks`` can answer; a lookup that fails raises a ProviderError.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot look tasks up by name")

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
