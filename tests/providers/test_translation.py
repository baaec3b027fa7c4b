"""What adapters put on the wire and take from it, for the details the contract suite cannot see."""

from __future__ import annotations

from typing import Any

import httpx2

from aijobs.providers.anthropic import _merge_event, messages_body, parse_message
from aijobs.providers.base import ProviderContext
from aijobs.providers.gemini import _delta as _gemini_delta
from aijobs.providers.gemini import _message as _gemini_message
from aijobs.providers.openai import OpenAIChat, chat_usage
from aijobs.routing.config import ProviderConfig
from aijobs.types.chat import AssistantMessage, ChatInput
from tests.providers.canned import canned_server

PNG = "data:image/png;base64,iVBORw0KGgo="
SCHEMA_FORMAT = {"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object"}}}


def chat(**fields: Any) -> ChatInput:
    return ChatInput.model_validate(fields)


def openai_chat(preset: str) -> OpenAIChat:
    config = ProviderConfig(kind="openai", preset=preset, base_url="http://127.0.0.1:1/v1")
    return OpenAIChat(ProviderContext("p", config, "k", httpx2.AsyncClient(), {}))


def test_openai_body_follows_the_presets_quirks() -> None:
    request = chat(
        messages=[{"role": "user", "content": "x"}], max_tokens=50,
        response_format={"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object"}}},
    )  # fmt: skip
    openai_body = openai_chat("openai").body("gpt", request)
    assert openai_body["max_completion_tokens"] == 50 and "max_tokens" not in openai_body
    assert openai_body["response_format"]["json_schema"]["schema"] == {"type": "object"}
    deepseek_body = openai_chat("deepseek").body("deepseek-chat", request)
    assert deepseek_body["max_tokens"] == 50
    minimax_body = openai_chat("minimax").body("MiniMax-M2", request)
    assert minimax_body["response_format"] == {"type": "json_object"}
    assert minimax_body["max_completion_tokens"] == 50


def test_openai_usage_counts_cache_and_reasoning_or_is_estimated() -> None:
    request = chat(messages=[{"role": "user", "content": "how are you today"}])
    answer = AssistantMessage(content="fine, thanks")
    full = chat_usage(
        {"prompt_tokens": 100, "completion_tokens": 40, "prompt_tokens_details": {"cached_tokens": 64},
         "completion_tokens_details": {"reasoning_tokens": 30}}, request, answer,
    )  # fmt: skip
    assert (full.input_tokens, full.output_tokens, full.cached_tokens, full.reasoning_tokens) == (
        100,
        40,
        64,
        30,
    )
    deepseek = chat_usage(
        {"prompt_tokens": 10, "completion_tokens": 2, "prompt_cache_hit_tokens": 8}, request, answer
    )
    assert deepseek.cached_tokens == 8
    estimated = chat_usage(None, request, answer)
    assert estimated.estimated
    assert (estimated.input_tokens, estimated.output_tokens) == (4, 3)  # "fine" "," "thanks"


def test_anthropic_request_translation() -> None:
    request = chat(
        messages=[
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                         {"type": "image_url", "image_url": {"url": PNG}},
                                         {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "t1", "function": {"name": "look", "arguments": '{"q": 1}'}},
                {"id": "t2", "function": {"name": "look", "arguments": "not json"}}]},
            {"role": "tool", "tool_call_id": "t1", "content": "a cat"},
            {"role": "tool", "tool_call_id": "t2", "content": "a hat"},
        ],
        tools=[{"function": {"name": "look", "parameters": {"type": "object"}}}],
        tool_choice="required", temperature=1.7, response_format={"type": "json_object"},
    )  # fmt: skip
    body = messages_body("claude", request)
    assert body["system"].startswith("Be terse.\n\nAnswer with a single JSON object")
    assert body["max_tokens"] == 4096
    assert body["temperature"] == 1.0
    assert body["tool_choice"] == {"type": "any"}
    assert body["tools"] == [{"name": "look", "description": "", "input_schema": {"type": "object"}}]
    user, assistant, results = body["messages"]
    assert user["content"][1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                              "data": "iVBORw0KGgo="}}  # fmt: skip
    assert user["content"][2]["source"] == {"type": "url", "url": "https://x.test/a.jpg"}
    assert assistant["content"][0] == {"type": "tool_use", "id": "t1", "name": "look", "input": {"q": 1}}
    assert assistant["content"][1]["input"] == {"arguments": "not json"}
    assert results["role"] == "user"  # both tool results in one user turn
    assert [b["tool_use_id"] for b in results["content"]] == ["t1", "t2"]


def test_anthropic_answer_with_thinking_tools_and_cache_usage() -> None:
    result = parse_message(
        {
            "model": "claude-x", "stop_reason": "tool_use",
            "content": [{"type": "thinking", "thinking": "Let me look."},
                        {"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "toolu_1", "name": "look", "input": {"q": "cat"}}],
            "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 100,
                      "cache_creation_input_tokens": 20},
        },
        "claude",
    )  # fmt: skip
    assert result.finish_reason == "tool_calls"
    assert result.message.reasoning == "Let me look."
    assert result.message.content == "Checking."
    assert result.message.tool_calls
    assert result.message.tool_calls[0].function.arguments == '{"q":"cat"}'
    assert (result.usage.input_tokens, result.usage.cached_tokens, result.usage.output_tokens) == (
        130,
        100,
        5,
    )


def test_gemini_request_translation() -> None:
    from aijobs.providers.gemini import content_body

    body = content_body(
        chat(
            messages=[
                {"role": "system", "content": "Be terse."},
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": PNG}}]},
                {"role": "assistant", "content": None,
                 "tool_calls": [{"id": "c1", "function": {"name": "look", "arguments": '{"q": 1}'}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "a cat"},
            ],
            tools=[{"function": {"name": "look", "parameters": {"type": "object"}}}],
            tool_choice={"type": "function", "function": {"name": "look"}}, max_tokens=64,
            response_format=SCHEMA_FORMAT,
        )
    )  # fmt: skip
    assert body["systemInstruction"] == {"parts": [{"text": "Be terse."}]}
    user, model, tool = body["contents"]
    assert user["parts"] == [{"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}]
    assert model == {"role": "model", "parts": [{"functionCall": {"name": "look", "args": {"q": 1}}}]}
    assert tool["parts"] == [{"functionResponse": {"name": "look", "response": {"result": "a cat"}}}]
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["look"]}}
    assert body["generationConfig"] == {
        "maxOutputTokens": 64,
        "responseMimeType": "application/json",
        "responseJsonSchema": {"type": "object"},
    }


async def test_gemini_blocked_prompt_is_a_content_filter_error() -> None:
    import pytest

    from aijobs.errors import ProviderContentFiltered

    blocked = b'{"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 5}}'
    with pytest.raises(ProviderContentFiltered, match="blocked"):
        await answer_with(blocked, "gemini")


async def answer_with(body: bytes, kind: str, preset: str | None = None) -> Any:
    """Run a chat adapter of ``kind`` against a server that answers 200 with ``body``."""
    from aijobs.providers.registry import ADAPTERS

    async with canned_server(body) as base, httpx2.AsyncClient() as client:
        config = ProviderConfig(kind=kind, preset=preset, base_url=base)
        adapter = ADAPTERS[(kind, "chat")](ProviderContext("p", config, "k", client, {}))
        return await adapter.run("m", chat(messages=[{"role": "user", "content": "x"}]))


async def test_odd_but_real_openai_style_answers() -> None:
    import pytest

    from aijobs.errors import ProviderBadResponse, ProviderUnavailable

    qwen = b'{"choices": [{"finish_reason": "tool_calls", "message": {"role": "assistant", "content": "", "tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "look", "arguments": "{}"}}]}}]}'
    result = await answer_with(qwen, "openai", "qwen")
    assert result.message.tool_calls[0].id == "call_1"
    chunks = b'{"choices": [{"finish_reason": "stop", "message": {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm"}, {"type": "text", "text": "Hello"}]}}]}'
    assert (await answer_with(chunks, "openai", "mistral")).message.content == "Hello"
    with pytest.raises(ProviderBadResponse):
        await answer_with(b'{"choices": [{"finish_reason": "stop", "message": null}]}', "openai")
    cut = b'{"choices": [{"finish_reason": "insufficient_system_resource", "message": {"content": "Hal"}}]}'
    with pytest.raises(ProviderUnavailable, match="cut short"):
        await answer_with(cut, "openai", "deepseek")


async def test_odd_but_real_gemini_and_anthropic_answers() -> None:
    import pytest

    from aijobs.errors import ProviderBadResponse

    with pytest.raises(ProviderBadResponse, match="MALFORMED_FUNCTION_CALL"):
        await answer_with(
            b'{"candidates": [{"finishReason": "MALFORMED_FUNCTION_CALL", "content": {"parts": []}}]}',
            "gemini",
        )
    with pytest.raises(ProviderBadResponse):
        await answer_with(
            b'{"candidates": [{"content": {"parts": [{"functionCall": {"args": {}}}]}}]}', "gemini"
        )
    with pytest.raises(ProviderBadResponse):
        await answer_with(b"[1, 2]", "gemini")
    claude = await answer_with(
        b'{"content": [{"type": "text", "text": "ok"}], "stop_reason": "model_context_window_exceeded", "usage": null}',
        "anthropic",
    )
    assert claude.finish_reason == "length"
    assert claude.usage.estimated


def test_anthropic_stream_pieces_leave_out_signatures_and_empty_text() -> None:
    message: dict[str, Any] = {"content": [], "usage": {}}
    partial: dict[int, list[str]] = {}
    events = [
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hm"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQ"}},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hi"}},
    ]
    pieces = [_merge_event(message, partial, event) for event in events]
    assert [(p.content, p.reasoning) for p in pieces if p is not None] == [(None, "hm"), ("Hi", None)]
    assert message["content"][0] == {"type": "thinking", "thinking": "hm", "signature": "EqQ"}


def test_gemini_streamed_call_ids_match_the_whole_answers() -> None:
    first = [{"functionCall": {"name": "a", "args": {}}}]
    second = [{"functionCall": {"name": "b", "args": {"x": 1}}}]
    streamed = [_gemini_delta(first, 0), _gemini_delta(second, 1)]
    ids = [call["id"] for piece in streamed if piece and piece.tool_calls for call in piece.tool_calls]
    whole = _gemini_message(first + second).tool_calls or []
    assert ids == [call.id for call in whole] == ["call_0_a", "call_1_b"]
