"""The ``gemini`` kind: Google's native Gemini API (``generateContent``, ``embedContent``,
``batchEmbedContents`` under ``{base_url}/v1beta/models/{model}:...``, key in ``x-goog-api-key``).

Translation both ways:

- system messages → ``systemInstruction``; assistant turns → role ``model``;
- image parts → ``inlineData`` (data URLs) or ``fileData`` (http URLs);
- assistant ``tool_calls`` → ``functionCall`` parts; ``tool`` messages → ``functionResponse`` parts,
  which need the function's name: it is looked up from the call the result answers;
- ``tool_choice`` → ``functionCallingConfig`` modes AUTO / ANY / NONE (+ allowed names);
- JSON response formats → ``responseMimeType`` and ``responseJsonSchema``;
- a prompt blocked by safety (``promptFeedback.blockReason``, no candidates) → a content-filter error;
- a part's ``thoughtSignature`` → ``extra_content.google.thought_signature``: a ``functionCall``
  part's on its tool call, any other part's (the last one) on the message; sent back on the same
  ``functionCall`` part (Gemini 3 answers 400 when the current turn's first call of a step has none)
  and on the message's last part. With parallel calls only the first call carries one.

Gemini's function calls carry no id in most versions; ours get ``call_{n}_{name}``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson
from pydantic import BaseModel

from aijobs.errors import ProviderBadResponse, ProviderContentFiltered
from aijobs.providers import http, sse
from aijobs.providers.base import NoOptions, ProviderContext, embed_in_batches
from aijobs.providers.sse import OnDelta
from aijobs.tokens import count_tokens
from aijobs.types.chat import (
    AssistantMessage,
    ChatDelta,
    ChatInput,
    ChatResult,
    ExtraContent,
    FinishReason,
    FunctionCall,
    ImagePart,
    Message,
    NamedToolChoice,
    ToolCall,
    thought_signature,
)
from aijobs.types.common import Usage
from aijobs.types.embed import EmbedInput, EmbedResult

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
BATCH_LIMIT = 100  # requests per batchEmbedContents call
_FINISH: dict[str, FinishReason] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "BLOCKLIST": "content_filter",
    "SPII": "content_filter",
}


class _GeminiKind:
    Options: ClassVar[type[BaseModel]] = NoOptions

    def __init__(self, context: ProviderContext) -> None:
        self.context = context
        self.base_url = (context.config.base_url or DEFAULT_BASE_URL).rstrip("/") + "/v1beta/models/"
        self.headers = http.json_headers(context, "x-goog-api-key", "")
        self.timeouts = http.timeouts_for(context)

    async def _call(self, model: str, method: str, body: dict[str, Any]) -> Any:
        return await http.post_json(
            self.context, f"{self.base_url}{model}:{method}", body, model=model, headers=self.headers,
            timeouts=self.timeouts,
        )  # fmt: skip

    def _bad(self, model: str, what: str, data: Any) -> ProviderBadResponse:
        return ProviderBadResponse(
            f"{self.context.name} {model}: {what}", provider=self.context.name, model=model, status=200,
            body=orjson.dumps(data).decode(),
        )  # fmt: skip


class GeminiChat(_GeminiKind):
    """``:generateContent``, or ``:streamGenerateContent?alt=sse`` when streamed."""

    async def run(self, model: str, request: ChatInput) -> ChatResult:
        data = await self._call(model, "generateContent", content_body(request))
        return self._result(model, request, data)

    async def run_streaming(self, model: str, request: ChatInput, on_delta: OnDelta) -> ChatResult:
        """The same answer, streamed; the chunks' parts are joined into one response."""
        url = f"{self.base_url}{model}:streamGenerateContent?alt=sse"
        merged: dict[str, Any] = {}
        parts: list[dict[str, Any]] = []
        events = sse.stream_json(
            self.context,
            url,
            content_body(request),
            model=model,
            headers=self.headers,
            timeouts=self.timeouts,
        )
        async for chunk in events:
            chunk = http.as_dict(chunk)
            candidates = chunk.get("candidates") or [{}]
            candidate = http.as_dict(candidates[0])
            new_parts = [
                p for p in http.as_dict(candidate.get("content")).get("parts") or [] if isinstance(p, dict)
            ]
            calls_before = sum("functionCall" in p for p in parts)
            parts.extend(new_parts)
            delta = _delta(new_parts, calls_before)
            if delta is not None:
                on_delta(delta)
            merged.update({k: v for k, v in chunk.items() if k != "candidates"})
            if candidate.get("finishReason"):
                merged["finishReason"] = candidate["finishReason"]
        if parts or "finishReason" in merged:
            finish = merged.pop("finishReason", None)
            merged["candidates"] = [{"content": {"role": "model", "parts": parts}, "finishReason": finish}]
        return self._result(model, request, merged)

    def _result(self, model: str, request: ChatInput, data: Any) -> ChatResult:
        if not isinstance(data, dict):
            raise self._bad(model, "the answer is not an object", data)
        blocked = (data.get("promptFeedback") or {}).get("blockReason")
        if blocked and not data.get("candidates"):
            raise ProviderContentFiltered(
                f"{self.context.name} {model}: the prompt was blocked ({blocked})",
                provider=self.context.name, model=model, status=200,
            )  # fmt: skip
        try:
            candidate = data["candidates"][0]
            message = _message((candidate.get("content") or {}).get("parts") or [])
        except (KeyError, IndexError, TypeError, AttributeError, ValueError):  # ValueError: pydantic's too
            raise self._bad(model, "the answer has no readable candidates[0]", data) from None
        reason = candidate.get("finishReason") or "STOP"
        if reason not in _FINISH and not (message.content or message.tool_calls):
            raise self._bad(model, f"the answer is empty ({reason})", data)  # e.g. MALFORMED_FUNCTION_CALL
        finish = "tool_calls" if message.tool_calls else _FINISH.get(reason, "stop")
        return ChatResult(
            message=message, finish_reason=finish, model=data.get("modelVersion") or model,
            usage=_usage(data.get("usageMetadata"), request, message),
        )  # fmt: skip


def _delta(parts: list[dict[str, Any]], calls_before: int) -> ChatDelta | None:
    """What newly streamed ``parts`` add to the answer (a function call arrives whole)."""
    if not parts:
        return None
    message = _message(parts, calls_before)
    calls = [
        {"index": calls_before + i, "id": c.id, "type": "function", "function": c.function.model_dump()}
        | ({"extra_content": c.extra_content.model_dump(exclude_none=True)} if c.extra_content else {})
        for i, c in enumerate(message.tool_calls or [])
    ]
    extra = message.extra_content.model_dump(exclude_none=True) if message.extra_content else None
    if not (message.content or message.reasoning or calls or extra):
        return None
    return ChatDelta(message.content or None, message.reasoning, calls or None, extra)


def _message(parts: list[dict[str, Any]], calls_before: int = 0) -> AssistantMessage:
    """The answer in ``parts``; unnamed function calls are numbered after ``calls_before`` earlier ones
    (so a streamed call gets the id the whole answer gives it)."""
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[ToolCall] = []
    signature = None  # the message's: the last one on a part that is not a function call
    for part in parts:
        if "functionCall" in part:
            call = part["functionCall"]
            arguments = orjson.dumps(call.get("args") or {}).decode()
            call_id = call.get("id") or f"call_{calls_before + len(calls)}_{call['name']}"
            function = FunctionCall(name=call["name"], arguments=arguments)
            extra = ExtraContent.thought(part.get("thoughtSignature"))
            calls.append(ToolCall(id=call_id, function=function, extra_content=extra))
            continue
        if "text" in part:
            (thoughts if part.get("thought") else texts).append(part["text"])
        signature = part.get("thoughtSignature") or signature
    return AssistantMessage(
        content="".join(texts) if texts else None,
        tool_calls=calls or None,
        reasoning="".join(thoughts) or None,
        extra_content=ExtraContent.thought(signature),
    )


def content_body(request: ChatInput) -> dict[str, Any]:
    """Our chat input as a ``generateContent`` request."""
    names = {call.id: call.function.name for m in request.messages for call in m.tool_calls or []}
    system = [m.text() for m in request.messages if m.role == "system"]
    contents: list[dict[str, Any]] = []
    for message in request.messages:
        if message.role == "system":
            continue
        role = "model" if message.role == "assistant" else "user"
        parts = _parts(message, names)
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    config: dict[str, Any] = {}
    if request.temperature is not None:
        config["temperature"] = request.temperature
    if request.max_tokens is not None:
        config["maxOutputTokens"] = request.max_tokens
    wire_names = {"top_p": "topP", "stop": "stopSequences", "seed": "seed"}
    wire_names |= {"presence_penalty": "presencePenalty", "frequency_penalty": "frequencyPenalty"}
    for name, wire in wire_names.items():
        if getattr(request, name) is not None:
            config[wire] = getattr(request, name)
    fmt = request.response_format
    if fmt and fmt.type != "text":
        config["responseMimeType"] = "application/json"
        if fmt.type == "json_schema" and fmt.json_schema is not None:
            config["responseJsonSchema"] = fmt.json_schema.schema_
    if config:
        body["generationConfig"] = config
    if request.tools:
        declarations = [
            {
                "name": t.function.name,
                "description": t.function.description or "",
                "parameters": t.function.parameters,
            }
            for t in request.tools
        ]
        body["tools"] = [{"functionDeclarations": declarations}]
        if request.tool_choice is not None:
            body["toolConfig"] = {"functionCallingConfig": _calling_config(request.tool_choice)}
    return body


def _parts(message: Message, names: dict[str, str]) -> list[dict[str, Any]]:
    if message.role == "tool":
        name = names.get(message.tool_call_id or "", message.name or "tool")
        try:
            response = orjson.loads(message.text())
        except orjson.JSONDecodeError:
            response = None
        if not isinstance(response, dict):
            response = {"result": message.text()}
        return [{"functionResponse": {"name": name, "response": response}}]
    parts: list[dict[str, Any]] = []
    if isinstance(message.content, str):
        if message.content:
            parts.append({"text": message.content})
    elif message.content is not None:
        for part in message.content:
            parts.append(_image(part) if isinstance(part, ImagePart) else {"text": part.text})
    signature = thought_signature(message.extra_content)
    if signature:  # on the last text part, where Gemini put it (or on one of its own)
        if not parts:
            parts.append({"text": ""})
        parts[-1]["thoughtSignature"] = signature
    for call in message.tool_calls or []:
        try:
            args = orjson.loads(call.function.arguments)
        except orjson.JSONDecodeError:
            args = {"arguments": call.function.arguments}
        wire: dict[str, Any] = {"functionCall": {"name": call.function.name, "args": args}}
        signature = thought_signature(call.extra_content)
        if signature:  # unchanged, on the very part it came with
            wire["thoughtSignature"] = signature
        parts.append(wire)
    return parts or [{"text": ""}]


def _image(part: ImagePart) -> dict[str, Any]:
    inline = part.image_url.inline()
    if inline:
        return {"inlineData": {"mimeType": inline[0], "data": inline[1]}}
    return {"fileData": {"mimeType": "image/jpeg", "fileUri": part.image_url.url}}


def _calling_config(choice: str | NamedToolChoice) -> dict[str, Any]:
    if isinstance(choice, NamedToolChoice):
        return {"mode": "ANY", "allowedFunctionNames": [choice.function.get("name", "")]}
    return {"mode": {"auto": "AUTO", "required": "ANY", "none": "NONE"}[choice]}


def _usage(wire: Any, request: ChatInput, message: AssistantMessage) -> Usage:
    """Gemini's ``usageMetadata``; a count it leaves out is estimated and marked so (it omits zeros,
    so a missing output count on an empty answer stays 0)."""
    wire = wire if isinstance(wire, dict) else {}
    prompt, out = wire.get("promptTokenCount"), wire.get("candidatesTokenCount")
    estimated = False
    if prompt is None:
        prompt, estimated = sum(count_tokens(m.text()) for m in request.messages), True
    if out is None and (message.content or message.tool_calls):
        arguments = "".join(call.function.arguments for call in message.tool_calls or [])
        out, estimated = count_tokens(message.content or "") + count_tokens(arguments), True
    thoughts = int(wire.get("thoughtsTokenCount") or 0)
    return Usage(
        input_tokens=int(prompt), output_tokens=int(out or 0) + thoughts,
        cached_tokens=int(wire.get("cachedContentTokenCount") or 0), reasoning_tokens=thoughts,
        estimated=estimated,
    )  # fmt: skip


class GeminiEmbed(_GeminiKind):
    """``:embedContent`` for one text, ``:batchEmbedContents`` for several."""

    async def run(self, model: str, request: EmbedInput) -> EmbedResult:
        texts = request.texts()
        extra = {"outputDimensionality": request.dimensions} if request.dimensions else {}
        if len(texts) == 1:
            data = await self._call(
                model, "embedContent", {"content": {"parts": [{"text": texts[0]}]}, **extra}
            )
            vectors = self._vectors(model, [http.as_dict(data).get("embedding")], data)
            usage = Usage(input_tokens=count_tokens(texts[0]), estimated=True)  # Gemini reports none
        else:
            vectors, usage = await embed_in_batches(
                texts, BATCH_LIMIT, lambda batch: self._batch(model, batch, extra)
            )
        if len(vectors) != len(texts):
            raise self._bad(model, f"{len(vectors)} embeddings for {len(texts)} inputs", vectors)
        return EmbedResult(embeddings=vectors, model=model, usage=usage)

    async def _batch(
        self, model: str, texts: list[str], extra: dict[str, Any]
    ) -> tuple[list[list[float]], None]:
        requests = [{"model": f"models/{model}", "content": {"parts": [{"text": t}]}, **extra} for t in texts]
        data = await self._call(model, "batchEmbedContents", {"requests": requests})
        rows = http.as_dict(data).get("embeddings")
        if not isinstance(rows, list) or len(rows) != len(texts):
            raise self._bad(model, "the answer has no embeddings for the batch", data)
        return self._vectors(model, rows, data), None  # Gemini counts no tokens for embeddings

    def _vectors(self, model: str, rows: list[Any], data: Any) -> list[list[float]]:
        try:
            return [[float(x) for x in row["values"]] for row in rows]
        except (KeyError, TypeError, ValueError):
            raise self._bad(model, "the answer has no embedding values", data) from None
