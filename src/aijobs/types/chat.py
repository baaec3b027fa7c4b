"""The ``chat`` job type: messages in, one assistant message out."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from aijobs.types.common import MAX_URL_CHARS, Strict, Usage

MAX_MESSAGES = 512
MAX_TEXT_CHARS = 400_000
MAX_PARTS = 64
MAX_TOOLS = 128
MAX_SIGNATURE_CHARS = 1_000_000  # opaque, model-sized: Gemini's run to kilobytes of base64
NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"

FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]
_DATA_URL = re.compile(r"^data:(image/[a-z0-9.+-]+);base64,(.*)$", re.DOTALL)


class TextPart(Strict):
    type: Literal["text"]
    text: str = Field(max_length=MAX_TEXT_CHARS)


class ImageURL(Strict):
    url: str = Field(min_length=1, max_length=MAX_URL_CHARS, pattern=r"^(https?://|data:image/)")
    detail: Literal["auto", "low", "high"] = "auto"

    def inline(self) -> tuple[str, str] | None:
        """``(mime type, base64 data)`` for a ``data:`` URL; ``None`` for an http(s) URL."""
        match = _DATA_URL.match(self.url)
        return (match[1], match[2]) if match else None


class ImagePart(Strict):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class FunctionCall(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    arguments: str = Field(max_length=MAX_TEXT_CHARS, description="JSON text, as the model produced it.")


class GoogleExtra(BaseModel):
    """Gemini's share of :class:`ExtraContent`."""

    model_config = ConfigDict(extra="allow", frozen=True)

    thought_signature: str | None = Field(default=None, min_length=1, max_length=MAX_SIGNATURE_CHARS)


class ExtraContent(BaseModel):
    """Provider state a caller hands back unchanged with the message or tool call that carried it.

    The shape is Gemini's OpenAI-compatible API's (``{"google": {"thought_signature": "..."}}`` on a
    tool call or an assistant message), so an OpenAI SDK, which keeps unknown fields and sends them
    back, round-trips it without knowing about it. Keys we do not know are kept as they came.
    Job records keep it (a plain dump does); an adapter whose provider has no use for it dumps the
    input with ``exclude=WITHOUT_EXTRAS``.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    google: GoogleExtra | None = None

    @classmethod
    def thought(cls, signature: Any) -> ExtraContent | None:
        """Gemini's ``thoughtSignature`` as extra content (``None`` for no signature)."""
        if not isinstance(signature, str) or not signature:
            return None
        return cls(google=GoogleExtra(thought_signature=signature))


def thought_signature(extra: ExtraContent | None) -> str | None:
    """The Gemini thought signature in ``extra``, if there is one."""
    return extra.google.thought_signature if extra is not None and extra.google is not None else None


class ToolCall(Strict):
    id: str = Field(min_length=1, max_length=256)
    type: Literal["function"] = "function"
    function: FunctionCall
    extra_content: ExtraContent | None = Field(
        default=None, description="Provider state to send back unchanged (Gemini's thought signature)."
    )


class Message(Strict):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    name: str | None = Field(default=None, pattern=NAME_PATTERN)
    tool_calls: list[ToolCall] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_call_id: str | None = Field(default=None, max_length=256)
    extra_content: ExtraContent | None = Field(
        default=None, description="Provider state to send back unchanged (Gemini's thought signature)."
    )

    @field_validator("content")
    @classmethod
    def _parts_limit(cls, v: str | list[ContentPart] | None) -> str | list[ContentPart] | None:
        if isinstance(v, list) and not 1 <= len(v) <= MAX_PARTS:
            raise ValueError(f"must have between 1 and {MAX_PARTS} parts")
        return v

    @model_validator(mode="after")
    def _role_shape(self) -> Message:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs tool_call_id")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        if self.content is None and not self.tool_calls:
            raise ValueError("content is required unless the message carries tool_calls")
        return self

    def text(self) -> str:
        """The message's text parts joined (images contribute nothing)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return " ".join(p.text for p in self.content if isinstance(p, TextPart))


#: ``model_dump(exclude=WITHOUT_EXTRAS)`` of a :class:`ChatInput`: without any ``extra_content``, for a
#: provider that has no use for another provider's state (and may reject unknown fields).
WITHOUT_EXTRAS: dict[str, Any] = {
    "messages": {"__all__": {"extra_content": True, "tool_calls": {"__all__": {"extra_content": True}}}}
}


class FunctionDef(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = Field(default=None, max_length=4_096)
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None


class Tool(Strict):
    type: Literal["function"] = "function"
    function: FunctionDef


class NamedToolChoice(Strict):
    type: Literal["function"] = "function"
    function: dict[str, str]


class JSONSchemaFormat(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None
    description: str | None = Field(default=None, max_length=4_096)


class ResponseFormat(Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("json_schema is required when type is 'json_schema'")
        return self


class ChatInput(Strict):
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    tools: list[Tool] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    response_format: ResponseFormat | None = None
    top_p: float | None = Field(default=None, ge=0, le=1)
    stop: list[Annotated[str, Field(min_length=1, max_length=256)]] | None = Field(
        default=None, max_length=4, description="Up to 4 sequences that end the answer (not included)."
    )
    seed: int | None = Field(
        default=None, ge=-(2**63), lt=2**63, description="Best effort: not every provider."
    )
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _tool_choice_needs_tools(self) -> ChatInput:
        if isinstance(self.tool_choice, NamedToolChoice) and not self.tools:
            raise ValueError("tool_choice names a function but no tools were given")
        return self


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: list[ToolCall] | None = None
    reasoning: str | None = None
    extra_content: ExtraContent | None = None


@dataclass(frozen=True, slots=True)
class ChatDelta:
    """A piece of an answer as it streams: text, reasoning, or fragments of tool calls.

    ``tool_calls`` are OpenAI stream fragments: ``{"index", "id"?, "type"?, "function": {"name"?,
    "arguments"?}, "extra_content"?}``; a call's ``arguments`` arrive in pieces to be concatenated.
    ``extra_content`` is the message's (see :class:`ExtraContent`), once it is known.
    """

    content: str | None = None
    reasoning: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    extra_content: dict[str, Any] | None = None


class ChatResult(BaseModel):
    """What a chat adapter returns."""

    message: AssistantMessage
    finish_reason: FinishReason = "stop"
    model: str = ""
    usage: Usage = Field(default_factory=Usage)

    def output(self) -> dict[str, Any]:
        """The job's ``output`` object."""
        return {"message": self.message.model_dump(exclude_none=True), "finish_reason": self.finish_reason}
