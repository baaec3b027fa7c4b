"""``POST /v1/chat/completions``: OpenAI's chat API over aijobs' routing, whole or streamed.

Provider state rides in ``extra_content`` (Gemini's thought signatures, in the shape of Gemini's own
OpenAI-compatible API): on a tool call, and on the message or a delta. The OpenAI SDKs keep fields
they do not know and send them back with the message, so a conversation that appends the answer's
message round-trips it; the ``refusal`` and ``reasoning_content`` an SDK echoes back with it are
accepted (and left out of the job).

A streamed answer starts once its first piece exists: until then the route may still retry and fall
back, and a route that fails before then is an ordinary HTTP error the SDK raises. After the first
byte a failure ends the stream with an ``error`` event (the OpenAI SDK raises it as an
``APIError``); the job records it either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import Field, field_validator

from aijobs.api.deps import Services, services, tenant
from aijobs.api.errors import error_body, status_for
from aijobs.api.openai.wire import answer, failed, job_headers, metadata, parse, usage_block
from aijobs.calls import Call
from aijobs.inputs import check_chat_images
from aijobs.jobs import Job
from aijobs.routing.policy import Feature
from aijobs.routing.router import Stream
from aijobs.types.chat import ChatDelta, ChatInput, ChatResult
from aijobs.types.common import Strict

router = APIRouter(tags=["openai"])
Svc = Annotated[Services, Depends(services)]
Tenant = Annotated[str, Depends(tenant)]
MAX_CHOICES = 8
_CHAT_FIELDS = tuple(ChatInput.model_fields)
#: What an SDK sends back of an answer's message that a chat input has no field for.
_ECHOED = frozenset({"refusal", "reasoning_content"})


class StreamOptions(Strict):
    include_usage: bool = False


class ChatCompletionRequest(ChatInput):
    """OpenAI's chat request. ``store`` and ``parallel_tool_calls`` are accepted for compatibility:
    every call is recorded, and providers decide on parallel calls themselves."""

    model: str = Field(min_length=1, max_length=256)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=MAX_CHOICES)
    user: str | None = Field(default=None, max_length=512)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    metadata: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]] | None = (
        Field(default=None, max_length=16)
    )
    store: bool | None = None
    parallel_tool_calls: bool | None = None

    @field_validator("messages", mode="before")
    @classmethod
    def _drop_echoes(cls, value: Any) -> Any:
        """An answer's message sent back as it came (``messages.append(choice.message)``) carries
        ``refusal: null`` and our ``reasoning_content``; neither is the caller's input."""
        if not isinstance(value, list):
            return value
        return [
            {k: v for k, v in m.items() if k not in _ECHOED}
            if isinstance(m, dict) and m.get("role") == "assistant" and not _ECHOED.isdisjoint(m)
            else m
            for m in value
        ]

    def chat_input(self) -> ChatInput:
        """The job's input: the chat fields, already validated (so not validated again)."""
        fields = {name: getattr(self, name) for name in _CHAT_FIELDS}
        fields["max_tokens"] = self.max_tokens or self.max_completion_tokens
        return ChatInput.model_construct(**fields)


@router.post("/v1/chat/completions", summary="OpenAI-compatible chat completion (whole or streamed)")
async def chat_completions(request: Request, svc: Svc, owner: Tenant) -> Response:
    """The hot path: :class:`~aijobs.api.fastpath.FastPaths` serves it ahead of FastAPI's machinery;
    the route is here for the OpenAPI schema, and for an app run without the fast path."""
    return await complete(svc, owner, await request.body())


async def complete(svc: Services, owner: str, raw: bytes) -> Response:
    """Answer one chat completion request body for ``owner``."""
    body = parse(ChatCompletionRequest, raw)
    await check_chat_images(body, svc.guard, param_prefix="")
    feature = svc.catalog.feature(body.model, "chat")
    chat = body.chat_input()
    job = svc.calls.new_job(owner, feature, chat, metadata(body.user, body.metadata))
    if body.stream:
        return await _streamed(svc, job, feature, body, chat)
    call = await svc.calls.run(job, feature, chat, choices=body.n)
    if call.error is not None:
        return failed(call)
    return answer(_completion(call), job_headers(call.job))


def _completion(call: Call) -> dict[str, Any]:
    job = call.job
    choices = []
    for index, outcome in enumerate(call.outcomes):
        result = outcome.result
        assert isinstance(result, ChatResult)
        choices.append(
            {
                "index": index,
                "message": _message(result),
                "finish_reason": result.finish_reason,
                "logprobs": None,
            }
        )
    return {
        "id": job.id, "object": "chat.completion", "created": int(job.created_at),
        "model": (job.route or {}).get("model", ""), "choices": choices, "usage": usage_block(job.usage),
        "system_fingerprint": None,
    }  # fmt: skip


def _message(result: ChatResult) -> dict[str, Any]:
    message = result.message
    wire: dict[str, Any] = {"role": "assistant", "content": message.content, "refusal": None}
    if message.tool_calls:
        wire["tool_calls"] = [call.model_dump(exclude_none=True) for call in message.tool_calls]
    if message.reasoning:
        wire["reasoning_content"] = message.reasoning  # DeepSeek's name, which most SDK users know
    if message.extra_content:
        wire["extra_content"] = message.extra_content.model_dump(exclude_none=True)
    return wire


async def _streamed(
    svc: Services, job: Job, feature: Feature, body: ChatCompletionRequest, chat: ChatInput
) -> Response:
    """Answer with SSE once the first piece exists; an HTTP error if the route fails before that."""
    pieces: asyncio.Queue[tuple[int, ChatDelta]] = asyncio.Queue()
    streams = [Stream(functools.partial(_put, pieces, i)) for i in range(body.n)]
    task = asyncio.create_task(svc.calls.run(job, feature, chat, choices=body.n, streams=streams))
    first = asyncio.ensure_future(pieces.get())
    try:
        await asyncio.wait({task, first}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        first.cancel()
        task.cancel()
        raise
    head = [first.result()] if first.done() else []
    if not head:
        first.cancel()
        if task.result().error is not None:
            return failed(task.result())
    target = next((s.target for s in streams if s.target is not None), None)
    headers = {"x-aijobs-job-id": job.id, "x-aijobs-feature": job.feature, "cache-control": "no-cache"}
    if target is not None:
        headers |= {"x-aijobs-provider": target.provider, "x-aijobs-model": target.model}
    chunks = _Chunks(job, target.model if target else "", body.n)
    include_usage = body.stream_options is not None and body.stream_options.include_usage
    events = _events(head, pieces, task, chunks, include_usage)
    return StreamingResponse(events, media_type="text/event-stream", headers=headers)


def _put(pieces: asyncio.Queue[tuple[int, ChatDelta]], index: int, delta: ChatDelta) -> None:
    pieces.put_nowait((index, delta))


async def _events(
    head: list[tuple[int, ChatDelta]],
    pieces: asyncio.Queue[tuple[int, ChatDelta]],
    task: asyncio.Task[Call],
    chunks: _Chunks,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    try:
        for piece in head:
            yield chunks.delta(*piece)
        while True:
            while not pieces.empty():
                yield chunks.delta(*pieces.get_nowait())
            if task.done():
                break
            get = asyncio.ensure_future(pieces.get())
            await asyncio.wait({get, task}, return_when=asyncio.FIRST_COMPLETED)
            if get.done():
                yield chunks.delta(*get.result())
            else:
                get.cancel()
        call = task.result()
        if call.error is not None:
            status = status_for(call.error, openai=True)
            yield b"data: " + error_body(status, call.error.code, call.error.message) + b"\n\n"
            return
        for frame in chunks.ends(call, include_usage):
            yield frame
        yield b"data: [DONE]\n\n"
    finally:
        if not task.done():  # the caller went away: stop the call (it is recorded as canceled)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class _Chunks:
    """``chat.completion.chunk`` frames for one streamed call."""

    def __init__(self, job: Job, model: str, choices: int) -> None:
        self.base = {"id": job.id, "object": "chat.completion.chunk", "created": int(job.created_at)}
        self.model = model
        self.started = [False] * choices

    def _frame(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        chunk = {**self.base, "model": self.model, "system_fingerprint": None, "choices": choices, **extra}
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def delta(self, index: int, delta: ChatDelta) -> bytes:
        wire: dict[str, Any] = {}
        if not self.started[index]:
            wire["role"] = "assistant"
            self.started[index] = True
        if delta.content is not None:
            wire["content"] = delta.content
        if delta.reasoning is not None:
            wire["reasoning_content"] = delta.reasoning
        if delta.tool_calls:
            wire["tool_calls"] = delta.tool_calls
        if delta.extra_content:
            wire["extra_content"] = delta.extra_content
        return self._frame([{"index": index, "delta": wire, "finish_reason": None, "logprobs": None}])

    def ends(self, call: Call, include_usage: bool) -> list[bytes]:
        """Each choice's last chunk (the whole answer first, for a choice that never streamed)."""
        frames = []
        self.model = (call.job.route or {}).get("model") or self.model
        for index, outcome in enumerate(call.outcomes):
            result = outcome.result
            assert isinstance(result, ChatResult)
            if not self.started[index]:
                message = result.message
                calls = [
                    {"index": i, **c.model_dump(exclude_none=True)}
                    for i, c in enumerate(message.tool_calls or [])
                ]
                extra = message.extra_content.model_dump(exclude_none=True) if message.extra_content else None
                frames.append(
                    self.delta(index, ChatDelta(message.content, message.reasoning, calls or None, extra))
                )
            end = {"index": index, "delta": {}, "finish_reason": result.finish_reason, "logprobs": None}
            frames.append(self._frame([end]))
        if include_usage:
            frames.append(self._frame([], usage=usage_block(call.job.usage)))
        return frames
