"""The ``anthropic`` kind: Claude's native Messages API (``POST {base_url}/v1/messages``).

Translation both ways between our OpenAI-shaped chat and Anthropic's content blocks:

- system messages → the top-level ``system`` text;
- image parts → ``image`` blocks with a base64 or URL source;
- assistant ``tool_calls`` → ``tool_use`` blocks; ``tool`` messages → ``tool_result`` blocks in a user
  turn (consecutive turns of one role are merged, as the API wants them alternating);
- ``tool_choice`` auto/required/none/named → ``auto``/``any``/``none``/``tool``;
- JSON response formats → an instruction in the system text (the API has no ``response_format``);
- ``stop_reason`` → our finish reasons; usage with cache reads and writes counted into input tokens,
  cache reads also as ``cached_tokens`` (OpenAI's convention, so numbers compare across kinds).
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson
from pydantic import BaseModel

from aijobs.errors import ProviderBadResponse
from aijobs.providers import http, sse
from aijobs.providers.base import NoOptions, ProviderContext
from aijobs.providers.sse import OnDelta
from aijobs.tokens import count_tokens
from aijobs.types.chat import (
    AssistantMessage,
    ChatDelta,
    ChatInput,
    ChatResult,
    FinishReason,
    FunctionCall,
    ImagePart,
    Message,
    NamedToolChoice,
    ToolCall,
)
from aijobs.types.common import Usage

API_VERSION = "2023-06-01"
DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_MAX_TOKENS = 4096
_FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


class AnthropicChat:
    """Chat over Anthropic's Messages API."""

    Options: ClassVar[type[BaseModel]] = NoOptions

    def __init__(self, context: ProviderContext) -> None:
        self.context = context
        self.url = (context.config.base_url or DEFAULT_BASE_URL).rstrip("/") + "/v1/messages"
        self.headers = http.json_headers(context, "x-api-key", "", **{"anthropic-version": API_VERSION})
        self.timeouts = http.timeouts_for(context)

    async def run(self, model: str, request: ChatInput) -> ChatResult:
        data = await http.post_json(
            self.context, self.url, messages_body(model, request), model=model, headers=self.headers,
            timeouts=self.timeouts,
        )  # fmt: skip
        return self._result(model, data, request)

    async def run_streaming(self, model: str, request: ChatInput, on_delta: OnDelta) -> ChatResult:
        """The same answer, streamed as Messages API events and assembled into one message."""
        body = {**messages_body(model, request), "stream": True}
        message: dict[str, Any] = {"content": [], "usage": {}}
        partial_json: dict[int, list[str]] = {}
        events = sse.stream_json(
            self.context, self.url, body, model=model, headers=self.headers, timeouts=self.timeouts
        )
        async for event in events:
            delta = _merge_event(message, partial_json, http.as_dict(event))
            if delta is not None:
                on_delta(delta)
        for index, parts in partial_json.items():
            message["content"][index]["input"] = orjson.loads("".join(parts) or "{}")
        return self._result(model, message, request)

    def _result(self, model: str, data: Any, request: ChatInput) -> ChatResult:
        try:
            return parse_message(data, model, request)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ProviderBadResponse(
                f"{self.context.name} {model}: the answer is not a Messages API message",
                provider=self.context.name, model=model, status=200, body=orjson.dumps(data).decode(),
            ) from None  # fmt: skip


def _merge_event(
    message: dict[str, Any], partial_json: dict[int, list[str]], event: dict[str, Any]
) -> ChatDelta | None:
    """Fold one stream event into ``message``; the piece of the answer it carried, if any."""
    kind = event.get("type")
    if kind == "message_start":
        start = http.as_dict(event.get("message"))
        message.update({k: v for k, v in start.items() if k not in ("content", "usage")})
        message["usage"].update(http.as_dict(start.get("usage")))
    elif kind == "content_block_start":
        block = dict(http.as_dict(event.get("content_block")))
        message["content"].append(block)
        if block.get("type") == "tool_use":
            partial_json[len(message["content"]) - 1] = []
            call = {"id": block.get("id"), "type": "function", "function": {"name": block.get("name")}}
            return ChatDelta(tool_calls=[{"index": len(partial_json) - 1, **call}])
    elif kind == "content_block_delta":
        index, delta = int(event.get("index") or 0), http.as_dict(event.get("delta"))
        block = message["content"][index]
        if delta.get("type") == "input_json_delta":
            fragment = str(delta.get("partial_json") or "")
            partial_json.setdefault(index, []).append(fragment)
            ordinal = sorted(partial_json).index(index)
            return ChatDelta(tool_calls=[{"index": ordinal, "function": {"arguments": fragment}}])
        for name in ("text", "thinking", "signature"):
            if name in delta:
                piece = str(delta[name])
                block[name] = block.get(name, "") + piece
                if not piece or name == "signature":  # a thinking block's seal is no part of the answer
                    return None
                return ChatDelta(content=piece) if name == "text" else ChatDelta(reasoning=piece)
    elif kind == "message_delta":
        message.update(http.as_dict(event.get("delta")))
        message["usage"].update(http.as_dict(event.get("usage")))
    return None


def messages_body(model: str, request: ChatInput) -> dict[str, Any]:
    """Our chat input as a Messages API request."""
    system = [m.text() for m in request.messages if m.role == "system"]
    if request.response_format and request.response_format.type != "text":
        system.append(_json_instruction(request))
    turns: list[dict[str, Any]] = []
    for message in request.messages:
        if message.role == "system":
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _blocks(message)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
        "messages": turns,
    }
    if system:
        body["system"] = "\n\n".join(system)
    if request.temperature is not None:
        body["temperature"] = min(request.temperature, 1.0)  # Anthropic's range is 0..1
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop:
        body["stop_sequences"] = request.stop
    if request.tools:
        body["tools"] = [
            {
                "name": t.function.name,
                "description": t.function.description or "",
                "input_schema": t.function.parameters,
            }
            for t in request.tools
        ]
        if request.tool_choice is not None:
            body["tool_choice"] = _tool_choice(request.tool_choice)
    return body


def _blocks(message: Message) -> list[dict[str, Any]]:
    if message.role == "tool":
        return [{"type": "tool_result", "tool_use_id": message.tool_call_id, "content": message.text()}]
    blocks: list[dict[str, Any]] = []
    if isinstance(message.content, str):
        if message.content:
            blocks.append({"type": "text", "text": message.content})
    elif message.content is not None:
        for part in message.content:
            blocks.append(
                _image(part) if isinstance(part, ImagePart) else {"type": "text", "text": part.text}
            )
    for call in message.tool_calls or []:
        blocks.append(
            {"type": "tool_use", "id": call.id, "name": call.function.name, "input": _arguments(call)}
        )
    return blocks


def _image(part: ImagePart) -> dict[str, Any]:
    inline = part.image_url.inline()
    if inline:
        return {"type": "image", "source": {"type": "base64", "media_type": inline[0], "data": inline[1]}}
    return {"type": "image", "source": {"type": "url", "url": part.image_url.url}}


def _arguments(call: ToolCall) -> Any:
    try:
        return orjson.loads(call.function.arguments)
    except orjson.JSONDecodeError:
        return {"arguments": call.function.arguments}  # keep what the model said, in a shape Anthropic takes


def _tool_choice(choice: str | NamedToolChoice) -> dict[str, Any]:
    if isinstance(choice, NamedToolChoice):
        return {"type": "tool", "name": choice.function.get("name", "")}
    return {"type": {"auto": "auto", "required": "any", "none": "none"}[choice]}


def _json_instruction(request: ChatInput) -> str:
    fmt = request.response_format
    assert fmt is not None
    if fmt.type == "json_schema" and fmt.json_schema is not None:
        schema = orjson.dumps(fmt.json_schema.schema_).decode()
        return f"Answer with a single JSON object matching this JSON Schema, and nothing else: {schema}"
    return "Answer with a single JSON object, and nothing else."


def parse_message(data: dict[str, Any], model: str, request: ChatInput | None = None) -> ChatResult:
    """A Messages API answer as our chat result; counts its ``usage`` leaves out are estimated (the
    input's from ``request``) and the usage flagged as such."""
    texts, thoughts, calls = [], [], []
    for block in data["content"]:
        kind = block.get("type")
        if kind == "text":
            texts.append(block["text"])
        elif kind == "thinking":
            thoughts.append(block.get("thinking", ""))
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append(
                ToolCall(id=block["id"], function=FunctionCall(name=block["name"], arguments=arguments))
            )
    message = AssistantMessage(
        content="".join(texts) if texts else None,
        tool_calls=calls or None,
        reasoning="".join(thoughts) or None,
    )
    usage = http.as_dict(data.get("usage"))
    cache_read = int(usage.get("cache_read_input_tokens") or 0)
    cache_write = int(usage.get("cache_creation_input_tokens") or 0)
    fresh, output = usage.get("input_tokens"), usage.get("output_tokens")
    estimated = fresh is None or output is None
    if fresh is None:
        fresh = sum(count_tokens(m.text()) for m in request.messages) if request else 0
    if output is None:  # thinking is billed as output
        output = count_tokens(message.content or "") + count_tokens(message.reasoning or "")
        output += count_tokens("".join(call.function.arguments for call in calls))
    return ChatResult(
        message=message,
        finish_reason=_FINISH.get(data.get("stop_reason") or "end_turn", "stop"),
        model=data.get("model") or model,
        usage=Usage(
            input_tokens=int(fresh) + cache_read + cache_write,
            output_tokens=int(output),
            cached_tokens=cache_read,
            estimated=estimated,
        ),
    )
