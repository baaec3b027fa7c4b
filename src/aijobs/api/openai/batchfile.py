"""Batch input files: OpenAI's JSONL, one request per line, checked line by line as it streams in.

Each line is ``{"custom_id": ..., "method": "POST", "url": <endpoint>, "body": {...}}``:

- ``custom_id``: 1 to 64 characters, unique in the file (results are matched to requests by it);
- ``url``: ``/v1/chat/completions``, ``/v1/embeddings`` or ``/v1/rerank``, the same for every line;
- ``body``: that endpoint's request, validated as the endpoint itself would (``stream`` is refused:
  a batch line has nobody to stream to).

With the outbound guard given, a chat line's image URLs must pass it, as ``POST /v1/chat/completions``
checks them (``body.messages.N.content.M.image_url.url``).

Problems are collected per line (up to :data:`MAX_REPORTED`) with the line's number, so a caller
can fix a file in one pass. Memory grows with the number of distinct ``custom_id`` values only.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import BaseModel

from aijobs.api.errors import error_body, openai_status
from aijobs.api.openai.chat import ChatCompletionRequest
from aijobs.api.openai.vectors import EmbeddingsRequest, RerankRequest
from aijobs.api.openai.wire import parse, parse_fields, usage_block
from aijobs.errors import InvalidRequest
from aijobs.inputs import check_chat_images
from aijobs.jobs import Job, JobStatus
from aijobs.outbound import Guard, Names
from aijobs.types.chat import ChatInput
from aijobs.types.embed import EmbedInput
from aijobs.types.rerank import RerankInput

#: The job type each endpoint's requests run as.
JOB_TYPES = {"/v1/chat/completions": "chat", "/v1/embeddings": "embed", "/v1/rerank": "rerank"}
#: Endpoints a batch may call, and the request model of each.
ENDPOINTS: dict[str, type[BaseModel]] = {
    "/v1/chat/completions": ChatCompletionRequest,
    "/v1/embeddings": EmbeddingsRequest,
    "/v1/rerank": RerankRequest,
}
MAX_CUSTOM_ID_CHARS = 64
#: Line problems listed in one answer; the count covers them all.
MAX_REPORTED = 100
_FIELDS = frozenset({"custom_id", "method", "url", "body"})


@dataclass(frozen=True, slots=True)
class LineError:
    """One line's problem: 1-based ``line``, the field it is in, and what is wrong."""

    line: int
    message: str
    param: str | None = None

    def view(self) -> dict[str, Any]:
        return {"line": self.line, "param": self.param, "message": self.message}


@dataclass(slots=True)
class Checked:
    """What a batch file holds: its request lines and endpoint, or the problems found."""

    lines: int = 0
    endpoint: str | None = None
    errors: list[LineError] = field(default_factory=list)
    error_count: int = 0

    def fail(self, error: LineError) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_REPORTED:
            self.errors.append(error)


async def check(
    chunks: AsyncIterable[bytes], max_lines: int, max_line_bytes: int, *, guard: Guard | None = None
) -> Checked:
    """Read ``chunks`` (a JSONL file) once and check every line (see the module docstring)."""
    checked, seen = Checked(), set[bytes]()
    lines = _Lines(checked, seen, guard, {})
    number, rest = 0, b""
    async for chunk in chunks:
        *complete, rest = (rest + chunk).split(b"\n")
        if len(rest) > max_line_bytes:
            checked.fail(LineError(number + 1, f"the line is longer than {max_line_bytes} bytes"))
            return checked
        for raw in complete:
            number += 1
            await lines.check(raw, number)
    if rest.strip():
        number += 1
        await lines.check(rest, number)
    if checked.lines > max_lines:
        checked.fail(LineError(number, f"the file has {checked.lines} requests; the limit is {max_lines}"))
    if checked.lines == 0 and not checked.error_count:
        checked.fail(LineError(1, "the file has no requests"))
    return checked


@dataclass(slots=True)
class _Lines:
    """One file's check: what was found, the ``custom_id`` digests seen, the hosts resolved."""

    checked: Checked
    seen: set[bytes]
    guard: Guard | None
    names: Names

    async def check(self, raw: bytes, number: int) -> None:
        if not raw.strip():
            return
        checked, seen = self.checked, self.seen
        checked.lines += 1
        try:
            request = request_line(raw)
            if self.guard is not None and isinstance(request.input, ChatInput):
                await check_chat_images(request.input, self.guard, param_prefix="body.", names=self.names)
        except InvalidRequest as exc:
            checked.fail(LineError(number, exc.message, exc.param))
            return
        url, custom_id = request.url, request.custom_id
        if checked.endpoint is None:
            checked.endpoint = url
        elif url != checked.endpoint:
            message = f"url: every line must call {checked.endpoint}, not {url}"
            checked.fail(LineError(number, message, "url"))
        digest = hashlib.blake2b(custom_id.encode(), digest_size=16).digest()
        if digest in seen:
            message = f"custom_id: {custom_id!r} is used by an earlier line"
            checked.fail(LineError(number, message, "custom_id"))
        seen.add(digest)


@dataclass(frozen=True, slots=True)
class RequestLine:
    """A checked line: its ``custom_id``, its endpoint, and the input of the job that runs it."""

    custom_id: str
    url: str
    input: BaseModel


def request_line(raw: bytes) -> RequestLine:
    """One line as its parts, its body validated for its endpoint and turned into a job input;
    :class:`InvalidRequest` naming the field otherwise (a body field is named ``body.<field>``)."""
    try:
        line = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("the line is not valid JSON") from None
    if not isinstance(line, dict):
        raise InvalidRequest("the line must be a JSON object")
    if unknown := sorted(set(line) - _FIELDS):
        raise InvalidRequest(f"{unknown[0]}: unknown field", param=unknown[0])
    custom_id = line.get("custom_id")
    if not isinstance(custom_id, str) or not 0 < len(custom_id) <= MAX_CUSTOM_ID_CHARS:
        message = f"custom_id: a string of 1 to {MAX_CUSTOM_ID_CHARS} characters"
        raise InvalidRequest(message, param="custom_id")
    if line.get("method") != "POST":
        raise InvalidRequest("method: must be POST", param="method")
    url = line.get("url")
    if url not in ENDPOINTS:
        raise InvalidRequest(f"url: must be one of {', '.join(ENDPOINTS)}", param="url")
    body = line.get("body")
    if not isinstance(body, dict):
        raise InvalidRequest("body: must be a JSON object", param="body")
    if body.get("stream"):
        raise InvalidRequest("body.stream: a batch request cannot stream", param="body.stream")
    if body.get("n", 1) != 1:
        raise InvalidRequest("body.n: a batch request answers one choice", param="body.n")
    try:
        job = job_input(url, body)  # as the batch will run it: the endpoint's checks, then the job's
    except InvalidRequest as exc:
        param = f"body.{exc.param}" if exc.param else "body"
        raise InvalidRequest(f"body.{exc.message}" if exc.param else exc.message, param=param) from None
    return RequestLine(custom_id, url, job)


def job_input(url: str, body: dict[str, Any]) -> BaseModel:
    """A checked line's body as the input of the job that runs it."""
    request = parse(ENDPOINTS[url], orjson.dumps(body))
    if isinstance(request, ChatCompletionRequest):
        return request.chat_input()
    if isinstance(request, EmbeddingsRequest):
        return parse_fields(EmbedInput, {"input": request.input, "dimensions": request.dimensions})
    assert isinstance(request, RerankRequest)
    return parse_fields(
        RerankInput, {"query": request.query, "documents": request.texts(), "top_n": request.top_n}
    )


def result_line(job: Job) -> bytes:
    """A finished line job as a line of the output (succeeded) or error file (anything else)."""
    custom_id = job.metadata.get("custom_id", "")
    if job.status is JobStatus.SUCCEEDED:
        response = {"status_code": 200, "request_id": job.id, "body": _answer(job)}
    else:
        error = job.error or {"code": "gateway_canceled", "message": "the request was canceled"}
        status = openai_status(error["code"])
        body = orjson.loads(error_body(status, error["code"], error["message"]))
        response = {"status_code": status, "request_id": job.id, "body": body}
    line = {"id": f"batch_req_{job.id}", "custom_id": custom_id, "response": response, "error": None}
    return orjson.dumps(line) + b"\n"


def unrun_line(batch_id: str, number: int, custom_id: str, code: str, message: str) -> bytes:
    """A line the batch never ran (it expired or was cancelled first), for the error file."""
    line = {"id": f"batch_req_{batch_id}_{number}", "custom_id": custom_id, "response": None,
            "error": {"code": code, "message": message}}  # fmt: skip
    return orjson.dumps(line) + b"\n"


def _answer(job: Job) -> dict[str, Any]:
    """The body the endpoint itself would have answered with."""
    output, model = job.output or {}, (job.route or {}).get("model", "")
    base = {"id": job.id, "model": model, "created": int(job.created_at)}
    if job.type == "chat":
        message = {"role": "assistant", "content": None, **output.get("message", {})}
        choice = {
            "index": 0,
            "message": message,
            "finish_reason": output.get("finish_reason"),
            "logprobs": None,
        }
        return {**base, "object": "chat.completion", "choices": [choice], "usage": usage_block(job.usage)}
    tokens = int((job.usage or {}).get("input_tokens") or 0)
    if job.type == "embed":
        data = [
            {"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(output["embeddings"])
        ]
        return {
            **base,
            "object": "list",
            "data": data,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    return {**base, "object": "list", "results": output.get("results", []), "usage": {"total_tokens": tokens}}
