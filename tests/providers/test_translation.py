"""What adapters put on the wire and take from it, for the details the contract suite cannot see."""

from __future__ import annotations

from typing import Any

import httpx2
import orjson
import pytest

from aijobs.providers.anthropic import _merge_event, messages_body, parse_message
from aijobs.providers.base import ProviderContext
from aijobs.providers.gemini import _delta as _gemini_delta
from aijobs.providers.gemini import _message as _gemini_message
from aijobs.providers.openai import OpenAIChat, chat_usage
from aijobs.routing.config import ProviderConfig
from aijobs.types.chat import AssistantMessage, ChatInput, FunctionCall, ToolCall
from aijobs.types.common import Usage
from aijobs.types.rerank import RerankInput, RerankResult
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


RERANK = RerankInput(
    query="how long do refunds take",
    documents=["Refunds take 14 days.", "Our office dog is Biscuit.", "Refund requests go to billing."],
)
HITS = [{"index": 0, "relevance_score": 0.9}, {"index": 2, "relevance_score": 0.5}]
#: query 5 tokens x 3 documents + 6 + 6 + 5 document tokens; three short documents are one search
ESTIMATED_RERANK = (5 * 3 + 6 + 6 + 5, 1.0)


async def rerank_with(answer: dict[str, Any], kind: str, preset: str | None = None) -> Usage:
    """The usage a rerank adapter of ``kind`` takes from ``answer``."""
    from aijobs.providers.registry import ADAPTERS

    async with canned_server(orjson.dumps(answer)) as base, httpx2.AsyncClient() as client:
        config = ProviderConfig(kind=kind, preset=preset, base_url=base)
        adapter = ADAPTERS[(kind, "rerank")](ProviderContext("p", config, "k", client, {}))
        result = await adapter.run("m", RERANK)
        assert isinstance(result, RerankResult) and [hit.index for hit in result.results] == [0, 2]
        return result.usage


@pytest.mark.parametrize(
    ("kind", "preset", "answer", "expected"),
    [
        # Cohere bills search units; 0 is 0, not 1
        ("cohere", None, {"results": HITS, "meta": {"billed_units": {"search_units": 0}}}, (0, 0.0, False)),
        ("cohere", None, {"results": HITS, "meta": {"billed_units": {"search_units": 2}}}, (0, 2.0, False)),
        # SiliconFlow (Cohere's shape) bills tokens and reports no search units
        ("cohere", "siliconflow",
         {"results": HITS, "meta": {"billed_units": {"input_tokens": 42}, "tokens": {"input_tokens": 42}}},
         (42, 0.0, False)),
        ("jina", None, {"model": "m", "usage": {"total_tokens": 30}, "results": HITS}, (30, 0.0, False)),
        # no usage at all: both counts estimated, and marked so
        ("cohere", None, {"results": HITS}, (*ESTIMATED_RERANK, True)),
        ("cohere", None, {"results": HITS, "meta": {"billed_units": {}}}, (*ESTIMATED_RERANK, True)),
        ("jina", None, {"results": HITS, "usage": None}, (*ESTIMATED_RERANK, True)),
        ("dashscope", None, {"output": {"results": HITS}}, (*ESTIMATED_RERANK, True)),
    ],
)  # fmt: skip
async def test_rerank_usage_is_what_was_billed_or_an_estimate_marked_so(
    kind: str, preset: str | None, answer: dict[str, Any], expected: tuple[int, float, bool]
) -> None:
    usage = await rerank_with(answer, kind, preset)
    assert (usage.input_tokens, usage.units, usage.estimated) == expected


async def test_a_rerank_without_usage_is_priced_as_an_estimate_not_as_free() -> None:
    from aijobs.prices import Price, PriceBook

    book = PriceBook({}, {"m": Price(per_search_unit=0.002)}, {"USD": 1.0})
    unreported = await rerank_with({"results": HITS}, "cohere")
    assert unreported.estimated and book.cost_usd("p", "m", "rerank", unreported) == pytest.approx(0.002)
    nothing = await rerank_with({"results": HITS, "meta": {"billed_units": {"search_units": 0}}}, "cohere")
    assert not nothing.estimated and book.cost_usd("p", "m", "rerank", nothing) == 0.0


def test_rerank_search_units_are_estimated_per_hundred_documents_and_long_ones_count_more() -> None:
    from aijobs.providers.rerank import estimated_usage

    many = RerankInput(query="refunds", documents=["a short document"] * 250)
    assert estimated_usage(many).units == 3
    long_ones = RerankInput(query="refunds", documents=["word " * 700] * 60)  # 2 chunks each: 120
    assert estimated_usage(long_ones).units == 2
    assert estimated_usage(RERANK).input_tokens == ESTIMATED_RERANK[0]


def test_openai_usage_counts_left_out_are_estimated_but_reported_zeros_are_kept() -> None:
    request = chat(messages=[{"role": "user", "content": "how are you today"}])
    call = ToolCall(id="c1", function=FunctionCall(name="look", arguments='{"q": "cat"}'))
    answer = AssistantMessage(content=None, tool_calls=[call])
    partial = chat_usage({"prompt_tokens": 11, "completion_tokens": None}, request, answer)
    # the output is the tool call's arguments, {"q": "cat"}: 9 pieces
    assert (partial.input_tokens, partial.output_tokens, partial.estimated) == (11, 9, True)
    zeros = chat_usage({"prompt_tokens": 0, "completion_tokens": 0}, request, answer)
    assert (zeros.input_tokens, zeros.output_tokens, zeros.estimated) == (0, 0, False)
    chinese = chat(messages=[{"role": "user", "content": "退款需要多久"}])
    assert chat_usage(None, chinese, AssistantMessage(content="十四天")).input_tokens == 6


def test_anthropic_usage_it_leaves_out_is_estimated_from_the_request_and_answer() -> None:
    request = chat(messages=[{"role": "user", "content": "how are you today"}])
    answer = {"content": [{"type": "thinking", "thinking": "hm"}, {"type": "text", "text": "fine, thanks"}]}
    none = parse_message({**answer, "usage": None}, "claude", request)
    assert (none.usage.input_tokens, none.usage.output_tokens, none.usage.estimated) == (4, 4, True)
    no_input = parse_message({**answer, "usage": {"output_tokens": 12}}, "claude", request)
    assert (no_input.usage.input_tokens, no_input.usage.output_tokens, no_input.usage.estimated) == (
        4,
        12,
        True,
    )
    whole = parse_message({**answer, "usage": {"input_tokens": 0, "output_tokens": 12}}, "claude", request)
    assert (whole.usage.input_tokens, whole.usage.estimated) == (0, False)


async def test_embeddings_without_a_token_count_are_estimated() -> None:
    from aijobs.providers.openai import OpenAIEmbed
    from aijobs.types.embed import EmbedInput

    rows = [{"index": 0, "embedding": [0.1, 0.2]}, {"index": 1, "embedding": [0.3, 0.4]}]
    request = EmbedInput(input=["a red fox", "一只红狐狸"])
    for usage, expected in [
        ({"prompt_tokens": 8, "total_tokens": 8}, (8, False)),
        ({"total_tokens": 8}, (8, False)),  # vendors that give only the total
        (None, (3 + 5, True)),
    ]:
        body = orjson.dumps({"data": rows, "usage": usage})
        async with canned_server(body) as base, httpx2.AsyncClient() as client:
            config = ProviderConfig(kind="openai", preset="openai", base_url=base)
            result = await OpenAIEmbed(ProviderContext("p", config, "k", client, {})).run("m", request)
        assert (result.usage.input_tokens, result.usage.estimated) == expected


def test_openai_kinds_send_anothers_thought_signatures_only_to_gemini() -> None:
    signed = {"google": {"thought_signature": "c2lnbmF0dXJl"}}
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "f", "arguments": "{}"},
        "extra_content": signed,
    }
    request = chat(
        messages=[
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ]
    )
    deepseek = openai_chat("deepseek").body("m", request)
    assert "extra_content" not in orjson.dumps(deepseek).decode()
    gemini = openai_chat("gemini-openai").body("m", request)
    assert gemini["messages"][1]["tool_calls"][0]["extra_content"] == signed


async def test_gemini_counts_it_leaves_out_are_estimated() -> None:
    both = b'{"candidates": [{"content": {"parts": [{"text": "hello there"}]}}], "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 2}}'
    reported = await answer_with(both, "gemini")
    assert (reported.usage.input_tokens, reported.usage.output_tokens, reported.usage.estimated) == (
        7,
        2,
        False,
    )
    no_output = b'{"candidates": [{"content": {"parts": [{"text": "hello there"}]}}], "usageMetadata": {"promptTokenCount": 7}}'
    partial = await answer_with(no_output, "gemini")
    assert (partial.usage.input_tokens, partial.usage.output_tokens, partial.usage.estimated) == (7, 2, True)
