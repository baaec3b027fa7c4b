"""TEST FAKE: OpenAI's Files and Batches API (llmock does not speak it), as OpenAI documents it.

- ``POST /v1/files`` (multipart: ``purpose=batch``, ``file``): the JSONL is checked as OpenAI checks it
  (each line ``custom_id`` unique, ``method`` POST, ``url`` the batch's endpoint, ``body.model`` one
  model for the whole file);
- ``POST /v1/batches``, ``GET /v1/batches`` (newest first, ``limit``), ``GET /v1/batches/{id}``,
  ``POST /v1/batches/{id}/cancel``, ``GET /v1/files/{id}/content``.

A batch moves ``validating → in_progress → finalizing → completed`` as it is polled: each GET answers
:attr:`Fakes.lines_per_poll` more lines. Each chat line is really answered: the reply names the last
user message, with token counts from whitespace-split words. Faults, set by tests on the shared
:class:`Fakes`: ``create_faults`` and ``cancel_faults`` (statuses the next creates or cancels answer
with; a ``"lost"`` create makes the batch but answers 500), ``fail_batches`` (a batch fails validation), a
user message containing ``[[500]]`` (that line's answer is a 500, in the error file) or ``[[400]]``
(a 400). Cancelled and expired batches keep the lines answered so far; the rest are error lines with
``batch_cancelled`` / ``batch_expired``.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

KEY = "sk-batches-fake-0123456789"
_ids = itertools.count(1)


@dataclass
class RemoteBatch:
    id: str
    input_file_id: str
    endpoint: str
    metadata: dict[str, Any]
    lines: list[dict[str, Any]]
    status: str = "validating"
    done: list[bytes] = field(default_factory=list)
    errors: list[bytes] = field(default_factory=list)
    next_line: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int = field(default_factory=lambda: int(time.time()))

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id, "object": "batch", "endpoint": self.endpoint, "input_file_id": self.input_file_id,
            "completion_window": "24h", "status": self.status, "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id, "created_at": self.created_at, "metadata": self.metadata,
            "request_counts": {
                "total": len(self.lines), "completed": len(self.done), "failed": len(self.errors)
            },
            "errors": {"object": "list", "data": [{"code": "invalid_request", "message": "refused"}]}
            if self.status == "failed" else None,
        }  # fmt: skip


@dataclass
class Fakes:
    """The fake's state and its knobs (tests share it with the server thread)."""

    lines_per_poll: int = 1_000_000
    #: A batch answers at most this many lines, then stays in progress (to cancel it part-way).
    answer_limit: int = 1_000_000
    #: Statuses the next creates answer with (one each); "lost" makes the batch, then answers 500 (an
    #: answer lost on the way back: the caller cannot know the batch exists).
    create_faults: list[int | str] = field(default_factory=list)
    #: Statuses the next cancels answer with, one each, before any cancels.
    cancel_faults: list[int] = field(default_factory=list)
    fail_batches: bool = False
    files: dict[str, bytes] = field(default_factory=dict)
    batches: dict[str, RemoteBatch] = field(default_factory=dict)
    created: int = 0
    cancels: int = 0

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/files", self.upload, methods=["POST"]),
                Route("/v1/files/{id}/content", self.content, methods=["GET"]),
                Route("/v1/batches", self.create, methods=["POST"]),
                Route("/v1/batches", self.listing, methods=["GET"]),
                Route("/v1/batches/{id}", self.get, methods=["GET"]),
                Route("/v1/batches/{id}/cancel", self.cancel, methods=["POST"]),
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
            ]
        )

    async def upload(self, request: Request) -> Response:
        if (denied := _auth(request)) is not None:
            return denied
        async with request.form() as form:
            upload = form.get("file")
            if form.get("purpose") != "batch" or upload is None or isinstance(upload, str):
                return _error(400, "purpose must be batch, with a file")
            content, filename = await upload.read(), upload.filename
        problem = _check(content)
        if problem:
            return _error(400, problem)
        file_id = f"file-{next(_ids)}"
        self.files[file_id] = content
        return JSONResponse({"id": file_id, "object": "file", "bytes": len(content), "purpose": "batch",
                             "filename": filename, "created_at": int(time.time())})  # fmt: skip

    async def content(self, request: Request) -> Response:
        if (denied := _auth(request)) is not None:
            return denied
        content = self.files.get(request.path_params["id"])
        if content is None:
            return _error(404, "no such file")
        return Response(content, media_type="application/octet-stream")

    async def create(self, request: Request) -> Response:
        if (denied := _auth(request)) is not None:
            return denied
        fault = self.create_faults.pop(0) if self.create_faults else None
        if isinstance(fault, int):
            return _error(fault, "the server had an error while processing your request")
        body = orjson.loads(await request.body())
        content = self.files.get(body.get("input_file_id", ""))
        if content is None or body.get("completion_window") != "24h":
            return _error(400, "input_file_id must name an uploaded file; completion_window must be 24h")
        lines = [orjson.loads(line) for line in content.splitlines() if line.strip()]
        batch = RemoteBatch(f"batch_fake_{next(_ids)}", body["input_file_id"], body["endpoint"],
                            body.get("metadata") or {}, lines)  # fmt: skip
        self.batches[batch.id] = batch
        self.created += 1
        if fault == "lost":
            return _error(500, "the server had an error while processing your request")
        return JSONResponse(batch.view())

    async def listing(self, request: Request) -> Response:
        if (denied := _auth(request)) is not None:
            return denied
        limit = int(request.query_params.get("limit", "20"))
        newest = list(self.batches.values())[::-1][:limit]  # dicts keep the order they were made in
        return JSONResponse({"object": "list", "data": [b.view() for b in newest], "has_more": False})

    def _batch(self, request: Request) -> RemoteBatch | Response:
        """The batch the path names, or the error answer."""
        if (denied := _auth(request)) is not None:
            return denied
        return self.batches.get(request.path_params["id"]) or _error(404, "no such batch")

    async def get(self, request: Request) -> Response:
        batch = self._batch(request)
        if isinstance(batch, Response):
            return batch
        self._advance(batch)
        return JSONResponse(batch.view())

    async def cancel(self, request: Request) -> Response:
        batch = self._batch(request)
        if isinstance(batch, Response):
            return batch
        if self.cancel_faults:
            return _error(self.cancel_faults.pop(0), "the server is overloaded")
        self.cancels += 1
        if batch.status in ("validating", "in_progress"):
            batch.status = "cancelling"
        return JSONResponse(batch.view())

    async def chat(self, request: Request) -> Response:
        """The same model called directly (lines the batch did not answer run here)."""
        if (denied := _auth(request)) is not None:
            return denied
        body = orjson.loads(await request.body())
        return JSONResponse(_completion(body, "answer to: "))

    def _advance(self, batch: RemoteBatch) -> None:
        if batch.status == "validating":
            batch.status = "failed" if self.fail_batches else "in_progress"
        elif batch.status == "in_progress":
            last = min(batch.next_line + self.lines_per_poll, self.answer_limit)
            for line in batch.lines[batch.next_line : last]:
                _answer(batch, line)
                batch.next_line += 1
            if batch.next_line == len(batch.lines):
                batch.status = "finalizing"
        elif batch.status == "finalizing":
            self._end(batch, "completed")
        elif batch.status == "cancelling":
            self._end(batch, "cancelled")

    def _end(self, batch: RemoteBatch, status: str) -> None:
        for line in batch.lines[batch.next_line :]:
            error = {"code": f"batch_{status}", "message": f"the batch was {status}"}
            batch.errors.append(_result(line, None, error))
        batch.next_line = len(batch.lines)
        for name, lines in (("output_file_id", batch.done), ("error_file_id", batch.errors)):
            if lines:
                file_id = f"file-{next(_ids)}"
                self.files[file_id] = b"".join(lines)
                setattr(batch, name, file_id)
        batch.status = status


def _answer(batch: RemoteBatch, line: dict[str, Any]) -> None:
    body = line["body"]
    asked = next((m["content"] for m in reversed(body["messages"]) if m["role"] == "user"), "")
    for status in (500, 400):
        if f"[[{status}]]" in str(asked):
            error = {"error": {"message": f"injected {status}", "type": "server_error" if status == 500
                               else "invalid_request_error", "code": None}}  # fmt: skip
            batch.errors.append(
                _result(line, {"status_code": status, "request_id": "req_x", "body": error}, None)
            )
            return
    answer = _completion(body, "batch answer to: ")
    batch.done.append(_result(line, {"status_code": 200, "request_id": "req_x", "body": answer}, None))


def _completion(body: dict[str, Any], prefix: str) -> dict[str, Any]:
    asked = next((m["content"] for m in reversed(body["messages"]) if m["role"] == "user"), "")
    reply = prefix + str(asked)
    prompt = sum(len(str(m["content"]).split()) for m in body["messages"])
    completion = len(reply.split())
    return {
        "id": f"chatcmpl-{next(_ids)}", "object": "chat.completion", "created": int(time.time()),
        "model": body["model"],
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}
        ],
        "usage": {
            "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion
        },
    }  # fmt: skip


def _result(line: dict[str, Any], response: dict[str, Any] | None, error: dict[str, Any] | None) -> bytes:
    return orjson.dumps({"id": f"batch_req_{next(_ids)}", "custom_id": line["custom_id"],
                         "response": response, "error": error}) + b"\n"  # fmt: skip


def _check(content: bytes) -> str | None:
    """OpenAI's checks of a batch input file; the first problem, or ``None``."""
    seen, models = set(), set()
    for number, raw in enumerate(content.splitlines()):
        if not raw.strip():
            continue
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return f"line {number + 1}: not JSON"
        if line.get("method") != "POST" or line.get("url") != "/v1/chat/completions":
            return f"line {number + 1}: method must be POST and url /v1/chat/completions"
        if line.get("custom_id") in seen:
            return f"line {number + 1}: duplicate custom_id"
        seen.add(line.get("custom_id"))
        models.add(line.get("body", {}).get("model"))
    if len(models) != 1:
        return "a batch file must use one model"
    return None


def _auth(request: Request) -> Response | None:
    if request.headers.get("authorization") != f"Bearer {KEY}":
        return _error(401, "Incorrect API key provided")
    return None


def _error(status: int, message: str) -> Response:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": None}}, status)
