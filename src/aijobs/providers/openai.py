"""The ``openai`` kind: OpenAI's chat completions and embeddings wire format, and every vendor that
speaks it (DeepSeek, Qwen, Moonshot, Zhipu, Doubao, MiniMax, Mistral, xAI, Groq, …; see presets).

Our chat input is OpenAI-shaped, so the request is mostly a dump of it; the quirks a vendor has are
data in :mod:`aijobs.providers.presets`, never branches on vendor names here.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson
from pydantic import BaseModel

from aijobs.errors import ProviderBadResponse, ProviderUnavailable
from aijobs.providers import http, sse
from aijobs.providers.base import NoOptions, ProviderContext, embed_in_batches
from aijobs.providers.presets import Preset, preset_for
from aijobs.providers.sse import OnDelta
from aijobs.tokens import count_tokens
from aijobs.types.chat import (
    WITHOUT_EXTRAS,
    AssistantMessage,
    ChatDelta,
    ChatInput,
    ChatResult,
    FinishReason,
    FunctionCall,
    ToolCall,
)
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
#: Finish reasons that mean the vendor broke off the answer (DeepSeek, Zhipu): an error, retryable.
_CUT_SHORT = frozenset({"insufficient_system_resource", "network_error"})


class _OpenAIKind:
    """What both adapters share: where to send, with which key and timeouts."""

    Options: ClassVar[type[BaseModel]] = NoOptions

    def __init__(self, context: ProviderContext) -> None:
        self.context = context
        self.preset: Preset = preset_for(context.config.preset)
        base_url = context.config.base_url or self.preset.base_url or ""
        self.base_url = base_url.rstrip("/")
        self.headers = http.json_headers(context, self.preset.auth_header, self.preset.auth_prefix)
        self.timeouts = http.timeouts_for(context)

    async def _post(self, path: str, model: str, body: dict[str, Any]) -> Any:
        return await http.post_json(
            self.context,
            self.base_url + path,
            body,
            model=model,
            headers=self.headers,
            timeouts=self.timeouts,
        )

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
    """``POST {base_url}/chat/completions``, whole or streamed."""

    async def run(self, model: str, request: ChatInput) -> ChatResult:
        data = await self._post("/chat/completions", model, self.body(model, request))
        return self._result(model, request, data)

    async def run_streaming(self, model: str, request: ChatInput, on_delta: OnDelta) -> ChatResult:
        """The same answer, streamed (``stream: true``) and assembled chunk by chunk."""
        body = {**self.body(model, request), "stream": True, "stream_options": {"include_usage": True}}
        assembled = _Assembly()
        events = sse.stream_json(
            self.context, self.base_url + "/chat/completions", body, model=model, headers=self.headers,
            timeouts=self.timeouts,
        )  # fmt: skip
        async for chunk in events:
            delta = assembled.add(chunk)
            if delta is not None:
                on_delta(delta)
        return self._result(model, request, assembled.wire())

    def _result(self, model: str, request: ChatInput, data: Any) -> ChatResult:
        try:
            choice = data["choices"][0]
            wire = choice["message"]
            content = _text(wire.get("content"))
            tool_calls = [_tool_call(c) for c in wire.get("tool_calls") or []] or None
            reasoning = _text(wire.get("reasoning_content") or wire.get("reasoning"))
        except (KeyError, IndexError, TypeError, AttributeError, ValueError):
            raise self._bad(model, "the answer has no readable choices[0].message", data) from None
        reason = choice.get("finish_reason") or "stop"
        if reason in _CUT_SHORT:
            raise ProviderUnavailable(
                f"{self.context.name} {model}: the answer was cut short ({reason})",
                provider=self.context.name, model=model, status=200,
            )  # fmt: skip
        message = AssistantMessage(content=content, tool_calls=tool_calls, reasoning=reasoning)
        finish = _FINISH.get(reason, "stop")
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
            # Another provider's state (Gemini's thought signatures) only for a vendor that reads it.
            **request.model_dump(
                mode="json",
                by_alias=True,
                exclude_none=True,
                exclude=None if self.preset.extra_content else WITHOUT_EXTRAS,
            ),
        }
        if "max_tokens" in body and self.preset.max_tokens_field != "max_tokens":
            body[self.preset.max_tokens_field] = body.pop("max_tokens")
        fmt = body.get("response_format")
        if fmt and fmt["type"] == "json_schema" and not self.preset.json_schema:
            body["response_format"] = {"type": "json_object"}
        return body


class _Assembly:
    """Streamed chunks merged into the shape of a whole ``chat.completion``."""

    def __init__(self) -> None:
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.usage: Any = None
        self.model: str | None = None

    def add(self, chunk: Any) -> ChatDelta | None:
        """Merge one chunk; the piece of the answer it carried, if any."""
        if not isinstance(chunk, dict):
            return None
        self.model = chunk.get("model") or self.model
        self.usage = chunk.get("usage") or self.usage
        content = reasoning = None
        calls: list[dict[str, Any]] = []
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            self.finish_reason = choice.get("finish_reason") or self.finish_reason
            delta = http.as_dict(choice.get("delta"))
            if delta.get("content"):
                content = str(_text(delta["content"]) or "")
                self.content.append(content)
            wire_reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if wire_reasoning:
                reasoning = str(_text(wire_reasoning) or "")
                self.reasoning.append(reasoning)
            calls += [self._add_call(http.as_dict(call)) for call in delta.get("tool_calls") or []]
        if not (content or reasoning or calls):
            return None
        return ChatDelta(content or None, reasoning or None, calls or None)

    def _add_call(self, call: dict[str, Any]) -> dict[str, Any]:
        index = int(call.get("index") or 0)
        slot = self.tool_calls.setdefault(index, {"function": {"arguments": ""}})
        fragment: dict[str, Any] = {"index": index, "function": {}}
        if call.get("id"):
            slot["id"] = fragment["id"] = call["id"]
            fragment["type"] = "function"
        function = http.as_dict(call.get("function"))
        if function.get("name"):
            slot["function"]["name"] = fragment["function"]["name"] = function["name"]
        if function.get("arguments"):
            slot["function"]["arguments"] += function["arguments"]
            fragment["function"]["arguments"] = function["arguments"]
        return fragment

    def wire(self) -> dict[str, Any]:
        message: dict[str, Any] = {"content": "".join(self.content) or None}
        if self.reasoning:
            message["reasoning_content"] = "".join(self.reasoning)
        if self.tool_calls:
            message["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        choice = {"message": message, "finish_reason": self.finish_reason}
        return {"choices": [choice], "usage": self.usage, "model": self.model}


def _text(value: Any) -> str | None:
    """Message text: a string, or (Mistral's thinking models) a list of typed chunks."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = [c.get("text", "") for c in value if isinstance(c, dict) and c.get("type", "text") == "text"]
        return "".join(texts) or None
    raise TypeError(f"unexpected content {type(value).__name__}")


def _tool_call(wire: dict[str, Any]) -> ToolCall:
    """A tool call with only the fields we model (Qwen adds ``index``; some send arguments as objects)."""
    function = wire["function"]
    arguments = function.get("arguments") or "{}"
    if not isinstance(arguments, str):
        arguments = orjson.dumps(arguments).decode()
    return ToolCall(id=wire["id"], function=FunctionCall(name=function["name"], arguments=arguments))


def chat_usage(wire: Any, request: ChatInput, message: AssistantMessage) -> Usage:
    """Tokens from the answer's ``usage`` block; a count it leaves out (or null) is estimated, and the
    usage flagged as such."""
    wire = http.as_dict(wire)
    prompt, completion = wire.get("prompt_tokens"), wire.get("completion_tokens")
    estimated = prompt is None or completion is None
    if prompt is None:
        prompt = sum(count_tokens(m.text()) for m in request.messages)
    if completion is None:
        completion = count_tokens(message.content or "") + count_tokens(message.reasoning or "")
        completion += count_tokens("".join(call.function.arguments for call in message.tool_calls or []))
    prompt_details = http.as_dict(wire.get("prompt_tokens_details"))
    completion_details = http.as_dict(wire.get("completion_tokens_details"))
    cached = prompt_details.get("cached_tokens") or wire.get("prompt_cache_hit_tokens") or 0  # DeepSeek
    return Usage(
        input_tokens=int(prompt),
        output_tokens=int(completion),
        cached_tokens=int(cached),
        reasoning_tokens=int(completion_details.get("reasoning_tokens") or 0),
        estimated=estimated,
    )


class OpenAIEmbed(_OpenAIKind):
    """``POST {base_url}/embeddings``."""

    async def run(self, model: str, request: EmbedInput) -> EmbedResult:
        vectors, usage = await embed_in_batches(
            request.texts(),
            self.preset.embed_batch,
            lambda batch: self._embed(model, batch, request.dimensions),
        )
        return EmbedResult(embeddings=vectors, model=model, usage=usage)

    async def _embed(
        self, model: str, texts: list[str], dimensions: int | None
    ) -> tuple[list[list[float]], Any]:
        body: dict[str, Any] = {"model": model, "input": texts, "encoding_format": "float"}
        if dimensions is not None:
            body["dimensions"] = dimensions
        data = await self._post("/embeddings", model, body)
        try:
            rows = sorted(data["data"], key=lambda row: row["index"])
            vectors = [[float(x) for x in row["embedding"]] for row in rows]
        except (KeyError, TypeError, ValueError):
            raise self._bad(model, "the answer has no data[].embedding", data) from None
        if len(vectors) != len(texts):
            raise self._bad(model, f"{len(vectors)} embeddings for {len(texts)} inputs", data)
        usage = http.as_dict(data.get("usage"))  # some vendors give only total_tokens (the same here)
        return vectors, usage.get("prompt_tokens", usage.get("total_tokens"))
