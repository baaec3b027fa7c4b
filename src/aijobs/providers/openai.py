"""The ``openai`` kind: OpenAI's chat completions and embeddings wire format, and every vendor that
speaks it (DeepSeek, Qwen, Moonshot, Zhipu, Doubao, MiniMax, Mistral, xAI, Groq, …; see presets).

Our chat input is OpenAI-shaped, so the request is mostly a dump of it; the quirks a vendor has are
data in :mod:`aijobs.providers.presets`, never branches on vendor names here.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson
from pydantic import BaseModel, ValidationError

from aijobs.errors import ProviderBadResponse
from aijobs.providers import http
from aijobs.providers.base import NoOptions, ProviderContext
from aijobs.providers.presets import Preset, preset_for
from aijobs.tokens import count_tokens
from aijobs.types.chat import AssistantMessage, ChatInput, ChatResult, FinishReason, ToolCall
from aijobs.types.common import Usage
from aijobs.types.embed import EmbedInput, EmbedResult

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    "sensitive": "content_filter",  # Zhipu, Moonshot
}


class _OpenAIKind:
    """What both adapters share: where to send, with which key and timeouts."""

    Options: ClassVar[type[BaseModel]] = NoOptions

    def __init__(self, context: ProviderContext) -> None:
        self.context = context
        self.preset: Preset = preset_for(context.config.preset)
        base_url = context.config.base_url or self.preset.base_url or ""
        self.base_url = base_url.rstrip("/")
        self.headers = {"Content-Type": "application/json"}
        if context.api_key:
            self.headers[self.preset.auth_header] = self.preset.auth_prefix + context.api_key
        self.timeouts = http.timeout(context.config.connect_timeout_s, context.config.read_timeout_s)

    async def _post(self, path: str, model: str, body: dict[str, Any]) -> Any:
        return await http.post_json(
            self.context.http, self.base_url + path, body, headers=self.headers,
            provider=self.context.name, model=model, timeouts=self.timeouts,
        )  # fmt: skip

    def _bad(self, model: str, what: str, data: Any) -> ProviderBadResponse:
        excerpt = orjson.dumps(data).decode()[:500]
        return ProviderBadResponse(
            f"{self.context.name} {model}: {what}",
            provider=self.context.name,
            model=model,
            status=200,
            body=excerpt,
        )


class OpenAIChat(_OpenAIKind):
    """``POST {base_url}/chat/completions``."""

    async def run(self, model: str, request: ChatInput) -> ChatResult:
        data = await self._post("/chat/completions", model, self.body(model, request))
        try:
            choice = data["choices"][0]
            wire = choice["message"]
        except (KeyError, IndexError, TypeError):
            raise self._bad(model, "the answer has no choices[0].message", data) from None
        try:
            tool_calls = [ToolCall.model_validate(c) for c in wire.get("tool_calls") or []] or None
        except ValidationError:
            raise self._bad(model, "the answer's tool calls are malformed", data) from None
        message = AssistantMessage(
            content=wire.get("content"),
            tool_calls=tool_calls,
            reasoning=wire.get("reasoning_content") or wire.get("reasoning"),
        )
        finish = _FINISH.get(choice.get("finish_reason") or "stop", "stop")
        if tool_calls and finish == "stop":
            finish = "tool_calls"  # some vendors say "stop" even when they called a tool
        usage = chat_usage(data.get("usage"), request, message)
        return ChatResult(
            message=message, finish_reason=finish, model=data.get("model") or model, usage=usage
        )

    def body(self, model: str, request: ChatInput) -> dict[str, Any]:
        """The wire request: our input is OpenAI-shaped, so this is a dump plus the preset's quirks."""
        body: dict[str, Any] = {
            "model": model,
            **request.model_dump(mode="json", by_alias=True, exclude_none=True),
        }
        if "max_tokens" in body and self.preset.max_tokens_field != "max_tokens":
            body[self.preset.max_tokens_field] = body.pop("max_tokens")
        fmt = body.get("response_format")
        if fmt and fmt["type"] == "json_schema" and not self.preset.json_schema:
            body["response_format"] = {"type": "json_object"}
        return body


def chat_usage(wire: Any, request: ChatInput, message: AssistantMessage) -> Usage:
    """Tokens from the answer's ``usage`` block, or an estimate flagged as such when there is none."""
    if not isinstance(wire, dict) or "prompt_tokens" not in wire:
        prompt = sum(count_tokens(m.text()) for m in request.messages)
        completion = count_tokens(message.content or "") + count_tokens(message.reasoning or "")
        return Usage(input_tokens=prompt, output_tokens=completion, estimated=True)
    prompt_details = wire.get("prompt_tokens_details") or {}
    completion_details = wire.get("completion_tokens_details") or {}
    cached = prompt_details.get("cached_tokens") or wire.get("prompt_cache_hit_tokens") or 0  # DeepSeek
    return Usage(
        input_tokens=int(wire.get("prompt_tokens") or 0),
        output_tokens=int(wire.get("completion_tokens") or 0),
        cached_tokens=int(cached),
        reasoning_tokens=int(completion_details.get("reasoning_tokens") or 0),
    )


class OpenAIEmbed(_OpenAIKind):
    """``POST {base_url}/embeddings``."""

    async def run(self, model: str, request: EmbedInput) -> EmbedResult:
        texts = request.texts()
        body: dict[str, Any] = {"model": model, "input": texts, "encoding_format": "float"}
        if request.dimensions is not None:
            body["dimensions"] = request.dimensions
        data = await self._post("/embeddings", model, body)
        try:
            rows = sorted(data["data"], key=lambda row: row["index"])
            vectors = [[float(x) for x in row["embedding"]] for row in rows]
        except (KeyError, TypeError, ValueError):
            raise self._bad(model, "the answer has no data[].embedding", data) from None
        if len(vectors) != len(texts):
            raise self._bad(model, f"{len(vectors)} embeddings for {len(texts)} inputs", data)
        wire = data.get("usage")
        if isinstance(wire, dict) and "prompt_tokens" in wire:
            usage = Usage(input_tokens=int(wire["prompt_tokens"] or 0))
        else:
            usage = Usage(input_tokens=sum(count_tokens(t) for t in texts), estimated=True)
        return EmbedResult(embeddings=vectors, model=data.get("model") or model, usage=usage)
