"""A provider's own batch API, in OpenAI's protocol: upload a JSONL file (``POST /files``,
``purpose=batch``), create a batch (``POST /batches``), poll it (``GET /batches/{id}``), cancel it
(``POST /batches/{id}/cancel``) and download its output and error files (``GET /files/{id}/content``).

OpenAI prices such batches at half its synchronous rate; vendors that speak the same protocol
(Qwen's DashScope, Zhipu, Groq, Together, …) likewise. Each request line is the body the chat adapter
would POST, so a preset's quirks apply unchanged; each result line is read by the chat adapter too.

Line ``custom_id`` values are the aijobs line numbers, so results map back to lines whatever order
the provider writes them in.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import orjson

from aijobs.errors import ProviderBadResponse, ProviderError
from aijobs.providers import http
from aijobs.providers.openai import OpenAIChat
from aijobs.providers.transport import exchange
from aijobs.types.chat import ChatInput, ChatResult

#: The provider's statuses after which a batch changes no more.
REMOTE_TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
CHAT_ENDPOINT = "/v1/chat/completions"


@dataclass(frozen=True, slots=True)
class RemoteBatch:
    """What aijobs reads off the provider's batch object."""

    id: str
    status: str
    input_file_id: str
    output_file_id: str | None = None
    error_file_id: str | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0

    @property
    def ended(self) -> bool:
        return self.status in REMOTE_TERMINAL

    @classmethod
    def of(cls, data: Any) -> RemoteBatch:
        counts = http.as_dict(data.get("request_counts"))
        return cls(
            str(data["id"]), str(data["status"]), str(data.get("input_file_id") or ""),
            data.get("output_file_id") or None, data.get("error_file_id") or None,
            int(counts.get("total") or 0), int(counts.get("completed") or 0), int(counts.get("failed") or 0),
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class LineResult:
    """One result line: the line number it answers, and its answer or why there is none."""

    number: int
    answer: ChatResult | None
    error: ProviderError | None


class OpenAIBatches:
    """One provider's batch API; built with that provider's chat adapter (its URL, key and quirks)."""

    def __init__(self, chat: OpenAIChat) -> None:
        self.chat = chat
        self.context = chat.context
        self.base_url = chat.base_url

    def request_line(self, number: int, model: str, request: ChatInput) -> bytes:
        """Line ``number`` as a request line of the provider's input file."""
        line = {"custom_id": str(number), "method": "POST", "url": CHAT_ENDPOINT,
                "body": self.chat.body(model, request)}  # fmt: skip
        return orjson.dumps(line) + b"\n"

    async def upload(self, content: bytes, model: str) -> str:
        """Upload an input file; its id."""
        boundary = "aijobs-" + os.urandom(12).hex()
        body = b"".join(
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'.encode(),
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="batch.jsonl"\r\n'
                "Content-Type: application/jsonl\r\n\r\n".encode(),
                content,
                f"\r\n--{boundary}--\r\n".encode(),
            )
        )
        headers = {**self.chat.headers, "Content-Type": f"multipart/form-data; boundary={boundary}"}
        data = await self._send("POST", "/files", model, content=body, headers=headers)
        return str(data["id"])

    async def create(self, input_file_id: str, model: str, metadata: dict[str, str]) -> RemoteBatch:
        body = {"input_file_id": input_file_id, "endpoint": CHAT_ENDPOINT, "completion_window": "24h",
                "metadata": metadata}  # fmt: skip
        return RemoteBatch.of(await self._json("POST", "/batches", model, body))

    async def find(self, input_file_id: str, model: str) -> RemoteBatch | None:
        """The batch made from ``input_file_id``, among the provider's 100 most recent."""
        data = await self._json("GET", "/batches?limit=100", model)
        for item in data.get("data") or []:
            if isinstance(item, dict) and item.get("input_file_id") == input_file_id:
                return RemoteBatch.of(item)
        return None

    async def get(self, remote_id: str, model: str) -> RemoteBatch:
        return RemoteBatch.of(await self._json("GET", f"/batches/{remote_id}", model))

    async def cancel(self, remote_id: str, model: str) -> RemoteBatch:
        return RemoteBatch.of(await self._json("POST", f"/batches/{remote_id}/cancel", model))

    async def download(self, file_id: str, model: str) -> bytes:
        """A file's whole content (the output and error files)."""
        content: bytes = await self._send("GET", f"/files/{file_id}/content", model, raw=True)
        return content

    def result(self, raw: bytes, model: str, request: ChatInput | None = None) -> LineResult:
        """Read one line of the output or error file."""
        number = line_number(raw)
        if number is None:
            excerpt = raw[:500].decode("utf-8", "replace")
            raise self.chat._bad(model, "a batch result line has no readable custom_id", excerpt)
        line = orjson.loads(raw)
        response = http.as_dict(line.get("response"))
        status = int(response.get("status_code") or 0)
        if status == 200:
            try:
                answer = self.chat._result(model, request or _NO_REQUEST, response.get("body"))
            except ProviderError as exc:
                return LineResult(number, None, exc)
            return LineResult(number, answer, None)
        body = orjson.dumps(response.get("body") or {"error": line.get("error")})
        error = http.error_for(status or 500, body, {}, self.context.name, model, self.context.api_key)
        return LineResult(number, None, error)

    async def _json(self, method: str, path: str, model: str, body: Any = None) -> Any:
        content = orjson.dumps(body) if body is not None else None
        return await self._send(method, path, model, content=content, headers=self.chat.headers)

    async def _send(
        self, method: str, path: str, model: str, *, content: bytes | None = None,
        headers: dict[str, str] | None = None, raw: bool = False,
    ) -> Any:  # fmt: skip
        with http.transport_errors(self.context.name, model):
            answer = await exchange(
                self.context.http, method, self.base_url + path, content=content,
                headers=headers or self.chat.headers, timeouts=self.chat.timeouts,
            )  # fmt: skip
        if answer.status_code >= 400:
            raise http.error_for(
                answer.status_code, answer.content, answer.headers, self.context.name, model,
                self.context.api_key,
            )  # fmt: skip
        if raw:
            return answer.content
        try:
            return orjson.loads(answer.content)
        except orjson.JSONDecodeError:
            raise ProviderBadResponse(
                f"{self.context.name} {model}: the batch API answered with a body that is not JSON",
                provider=self.context.name, model=model, status=answer.status_code,
            ) from None  # fmt: skip


def line_number(raw: bytes) -> int | None:
    """The line number a result line answers (its ``custom_id``), or ``None`` when it has none."""
    try:
        return int(orjson.loads(raw)["custom_id"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


#: Token counts come from the answer's usage block; a line without one is estimated from its answer only.
_NO_REQUEST = ChatInput(messages=[{"role": "user", "content": ""}])
