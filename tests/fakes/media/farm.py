"""TEST FAKE: the render farm behind every media provider fake; not a provider, never used in production.

Each provider fake (``tests/fakes/media/<provider>.py``) speaks its provider's documented wire format
and keeps its tasks here. A task's state follows the clock: ``queued`` for the first third of
``render_s``, ``running`` until ``render_s``, then its outcome. The outcome comes from a marker in the
prompt, so a test picks a path without any fake-specific API:

- no marker: success, with deterministic output bytes served from ``/files/...``;
- ``[fail]``: the task fails (a generic provider failure);
- ``[moderate]``: the provider's content moderation refuses it;
- ``[expire]``: once done, the task is gone (polls get the provider's not-found answer);
- ``[hang]``: the task never finishes.

Control API (JSON): ``POST /_media/reset``; ``POST /_media/config`` ``{"render_s", "output_bytes",
"options"}`` (``options``: per-fake switches, e.g. ``{"veo_operation_names": "short"}``);
``POST /_media/faults`` ``{"faults": [{"provider", "step", "status", "times", "retry_after",
"delay_s", "hold_s", "answer_delay_s", "body"}]}`` where ``step`` is ``submit`` | ``poll`` |
``download`` | ``cancel``. A fault acts at one moment of its step:

- before the step, ``status`` answers instead of doing it (a ``delay_s`` with no ``status`` only
  delays the answer, the step still done afterwards);
- ``hold_s``: the request is left unread that long first; a caller gone by then never reached the
  provider (nothing is journaled or done, as a server that never read a request does nothing);
- after the step (the task exists now): ``answer_delay_s`` holds the answer back that long (a caller
  that gives up or dies meanwhile leaves a task behind); ``body`` answers 200 with that text
  instead of the documented answer (an answer the caller cannot read; the task exists all the same).

``GET /_media/requests`` (journal: method, path, query, headers lowercased, json); ``GET /_media/tasks``
(every task: id, provider, model, prompt, phase, canceled, polls, body); ``GET /_media/held`` (how
many requests a ``hold_s`` fault is holding unread right now).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from aijobs.providers import sim_media

OUTCOMES = ("fail", "moderate", "expire", "hang")
CONTENT_TYPES = {
    "mp4": "video/mp4",
    "png": "image/png",
    "jpeg": "image/jpeg",
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
}
STEPS = frozenset({"submit", "poll", "download", "cancel"})


@dataclass
class FakeTask:
    id: str
    provider: str
    model: str
    prompt: str
    kind: str  # "video" | "image" | "audio"
    created_at: float
    render_s: float
    body: dict[str, Any]
    outcome: str = "succeed"
    canceled: bool = False
    polls: int = 0
    output_bytes: int = 65_536

    def phase(self, now: float | None = None) -> str:
        """queued | running | succeeded | failed | moderated | expired | canceled."""
        if self.canceled:
            return "canceled"
        elapsed = (now or time.time()) - self.created_at
        if elapsed < self.render_s / 3:
            return "queued"
        if elapsed < self.render_s or self.outcome == "hang":
            return "running"
        return {"succeed": "succeeded", "fail": "failed", "moderate": "moderated", "expire": "expired"}[
            self.outcome
        ]

    def progress(self) -> float:
        return round(min(1.0, (time.time() - self.created_at) / self.render_s) if self.render_s else 1.0, 3)

    @property
    def extension(self) -> str:
        return {"video": "mp4", "image": "png", "audio": "wav"}[self.kind]

    def file_path(self, index: int = 0) -> str:
        """Where the output is served (append to the fake's base URL)."""
        return f"/files/{self.id}/{index}.{self.extension}"


@dataclass
class Fault:
    provider: str
    step: str
    status: int | None
    times: int
    retry_after: float | None = None
    delay_s: float = 0.0
    hold_s: float = 0.0
    answer_delay_s: float = 0.0
    body: str | None = None

    @property
    def moment(self) -> str:
        """When the fault acts: ``hold`` (before the request is read), ``after`` (the step done), else
        ``before`` (the step not done yet)."""
        if self.hold_s:
            return "hold"
        return "after" if self.answer_delay_s or self.body is not None else "before"


class Dropped(Exception):
    """The caller went away while its request was held unread: the provider never saw it."""


@dataclass
class Farm:
    render_s: float = 0.6
    output_bytes: int = 65_536
    tasks: dict[str, FakeTask] = field(default_factory=dict)
    journal: list[dict[str, Any]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=itertools.count)
    #: Off for benchmarks: journaling every request of a long run costs the fake more than it serves.
    keep_journal: bool = True
    #: Per-fake switches (see each fake), set with ``/_media/config``'s ``options``.
    options: dict[str, Any] = field(default_factory=dict)
    #: Requests a ``hold_s`` fault holds unread right now.
    held: int = 0

    def create(self, provider: str, model: str, prompt: str, kind: str, body: dict[str, Any]) -> FakeTask:
        outcome = next((o for o in OUTCOMES if f"[{o}]" in prompt), "succeed")
        task_id = f"{provider[:3]}{next(self._ids):06d}{uuid.uuid4().hex[:10]}"
        task = FakeTask(
            task_id, provider, model, prompt, kind, time.time(), self.render_s, body, outcome,
            output_bytes=self.output_bytes,
        )  # fmt: skip
        self.tasks[task_id] = task
        return task

    def find(self, task_id: str, provider: str) -> FakeTask | None:
        """The task, counting a poll; ``None`` when unknown here or expired."""
        task = self.tasks.get(task_id)
        if task is None or task.provider != provider or task.phase() == "expired":
            return None
        task.polls += 1
        return task

    def _take(self, provider: str, step: str, moment: str) -> Fault | None:
        """The first queued fault for ``provider``'s ``step`` acting at ``moment``, consumed once."""
        for fault in self.faults:
            if fault.provider == provider and fault.step == step and fault.moment == moment:
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
                return fault
        return None

    async def fault(self, provider: str, step: str) -> Fault | None:
        """The first queued fault for ``provider``'s ``step`` (consumed); a pure delay is slept here."""
        fault = self._take(provider, step, "before")
        if fault is not None and fault.delay_s:
            await asyncio.sleep(fault.delay_s)
        return fault if fault is not None and fault.status is not None else None

    async def answer(self, provider: str, step: str, response: Response) -> Response:
        """``response``, the step being done: held back, or replaced by an unreadable 200, by a fault."""
        fault = self._take(provider, step, "after")
        if fault is None:
            return response
        if fault.answer_delay_s:
            await asyncio.sleep(fault.answer_delay_s)
        if fault.body is not None:
            return Response(fault.body.encode(), 200, media_type="application/json")
        return response

    async def record(self, request: Request, provider: str | None = None, step: str | None = None) -> Any:
        """Journal the request; return its JSON body (None when absent or not JSON).

        With ``provider`` and ``step``, a ``hold_s`` fault first leaves the request unread; a caller
        gone by then raises :class:`Dropped` (answered by the app, journaled nowhere).
        """
        hold = self._take(provider, step, "hold") if provider and step else None
        if hold is not None:
            self.held += 1
            try:
                await asyncio.sleep(hold.hold_s)
            finally:
                self.held -= 1
        try:
            raw = await request.body()
        except ClientDisconnect:
            raise Dropped(request.url.path) from None
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        if not self.keep_journal:
            return body
        self.journal.append(
            {
                "method": request.method,
                "path": request.url.path,
                "query": request.url.query,
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "json": body,
            }
        )
        return body

    def submits(self, provider: str) -> int:
        return sum(1 for t in self.tasks.values() if t.provider == provider)


def output_bytes(task: FakeTask, index: int = 0) -> bytes:
    """The task's output file: a real PNG or WAV for images and audio; seeded bytes for video."""
    if task.kind == "image":
        return sim_media.render_image(f"{task.prompt}#{index}", 64, 48, "png")
    if task.kind == "audio":
        return sim_media.render_wav(task.prompt, 1.0)
    seed = hashlib.sha256(f"{task.id}/{index}".encode()).digest()
    head = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"  # an MP4's first box, for sniffers
    return (head + seed * (task.output_bytes // len(seed) + 1))[: max(task.output_bytes, len(head))]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def control_routes(farm: Farm) -> list[Route]:
    """The ``/_media`` control API and the ``/files`` route serving outputs."""

    async def reset(request: Request) -> Response:
        farm.tasks.clear()
        farm.journal.clear()
        farm.faults.clear()
        farm.options.clear()
        farm.render_s, farm.output_bytes = 0.6, 65_536
        return json_response({"reset": True})

    async def config(request: Request) -> Response:
        body = orjson.loads(await request.body() or b"{}")
        farm.render_s = float(body.get("render_s", farm.render_s))
        farm.output_bytes = int(body.get("output_bytes", farm.output_bytes))
        farm.options.update(body.get("options") or {})
        return json_response(
            {"render_s": farm.render_s, "output_bytes": farm.output_bytes, "options": farm.options}
        )

    async def faults(request: Request) -> Response:
        body = orjson.loads(await request.body() or b"{}")
        for spec in body.get("faults", []):
            if spec.get("step") not in STEPS:
                return json_response({"detail": f"step must be one of {sorted(STEPS)}"}, 400)
            farm.faults.append(
                Fault(
                    spec["provider"],
                    spec["step"],
                    spec.get("status"),
                    int(spec.get("times", 1)),
                    spec.get("retry_after"),
                    float(spec.get("delay_s", 0.0)),
                    float(spec.get("hold_s", 0.0)),
                    float(spec.get("answer_delay_s", 0.0)),
                    spec.get("body"),
                )
            )
        return json_response({"pending": len(farm.faults)}, 201)

    async def requests(request: Request) -> Response:
        return json_response(farm.journal)

    async def held(request: Request) -> Response:
        return json_response({"held": farm.held})

    async def tasks(request: Request) -> Response:
        return json_response(
            [
                {
                    "id": t.id,
                    "provider": t.provider,
                    "model": t.model,
                    "prompt": t.prompt,
                    "phase": t.phase(),
                    "canceled": t.canceled,
                    "polls": t.polls,
                    "body": t.body,
                }
                for t in farm.tasks.values()
            ]
        )

    async def redirect(request: Request) -> Response:
        """A redirect to wherever ``?to=`` says (for the outbound guard's redirect test)."""
        return Response(status_code=302, headers={"Location": request.query_params["to"]})

    async def files(request: Request) -> Response:
        task = farm.tasks.get(request.path_params["task_id"])
        if task is None or task.phase() != "succeeded":
            return json_response({"detail": "Not Found"}, 404)
        fault = await farm.fault(task.provider, "download")
        if fault is not None and fault.status is not None:
            return json_response({"detail": "injected"}, fault.status)
        index = int(request.path_params["index"])
        ext = request.path_params["ext"]
        return Response(
            output_bytes(task, index), 200, media_type=CONTENT_TYPES.get(ext, "application/octet-stream")
        )

    return [
        Route("/_media/reset", reset, methods=["POST"]),
        Route("/_media/config", config, methods=["POST"]),
        Route("/_media/faults", faults, methods=["POST"]),
        Route("/_media/requests", requests, methods=["GET"]),
        Route("/_media/held", held, methods=["GET"]),
        Route("/_media/tasks", tasks, methods=["GET"]),
        Route("/_media/redirect", redirect, methods=["GET"]),
        Route("/files/{task_id}/{index:int}.{ext}", files, methods=["GET"]),
    ]
