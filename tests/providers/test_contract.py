"""One contract, every network adapter: success, usage, and each failure mapped to its closed code.

Each target is an adapter pointed at a fake that speaks its provider's wire format over real HTTP
(llmock for the protocols it covers). Adding a kind adds a target here; every case then runs on it.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest

from aijobs.embedded_redis import free_port
from aijobs.errors import ProviderError
from aijobs.providers.base import Adapter, ProviderContext
from aijobs.providers.registry import ADAPTERS
from aijobs.routing.config import ProviderConfig
from aijobs.types.chat import ChatDelta, ChatInput, ChatResult
from aijobs.types.embed import EmbedInput, EmbedResult
from aijobs.types.rerank import RerankInput, RerankResult
from tests.providers.canned import canned_server

API_KEY = "Tk9PlainLettersAndDigits0123456789abcdef"  # no prefix: redaction must not rely on one


def check_chat(result: Any) -> None:
    assert isinstance(result, ChatResult)
    assert result.message.content
    assert result.finish_reason == "stop"
    assert result.usage.input_tokens > 0
    assert result.usage.output_tokens > 0
    assert not result.usage.estimated


def check_rerank(result: Any) -> None:
    assert isinstance(result, RerankResult)
    assert len(result.results) == 2
    assert result.results[0].index in (0, 2)  # the two documents about refunds
    assert result.results[0].relevance_score >= result.results[1].relevance_score
    assert result.results[-1].index != 1  # the dog never outranks a refund
    assert not result.usage.estimated  # every fake reports what it billed: search units or tokens
    assert result.usage.units > 0 or result.usage.input_tokens > 0


def check_embed(result: Any) -> None:
    assert isinstance(result, EmbedResult)
    assert len(result.embeddings) == 2
    assert all(len(v) > 8 and all(math.isfinite(x) for x in v) for v in result.embeddings)
    assert result.usage.input_tokens > 0


@dataclass(frozen=True)
class Target:
    name: str
    kind: str
    job_type: str
    preset: str | None
    path: str  # where the fake serves this protocol
    model: str
    request: Any
    check: Callable[[Any], None]
    server: str = "llmock"  # or "fakes": tests/fakes, for protocols llmock does not speak


CHAT = ChatInput.model_validate(
    {"messages": [{"role": "user", "content": "Say hello to the contract suite."}]}
)
EMBED = EmbedInput(input=["a red fox", "a blue whale"])
RERANK = RerankInput(
    query="how long do refunds take",
    documents=["Refunds take 14 days.", "Our office dog is Biscuit.", "Refund requests go to billing."],
    top_n=2,
)
TARGETS = [
    Target("openai-chat", "openai", "chat", "openai", "/v1", "gpt-4o-mini", CHAT, check_chat),
    Target("deepseek-chat", "openai", "chat", "deepseek", "/v1", "deepseek-chat", CHAT, check_chat),
    Target(
        "mistral-chat", "openai", "chat", "mistral", "/mistral/v1", "mistral-small-latest", CHAT, check_chat
    ),
    Target("xai-chat", "openai", "chat", "xai", "/xai/v1", "grok-3-mini", CHAT, check_chat),
    Target(
        "groq-chat", "openai", "chat", "groq", "/groq/openai/v1", "llama-3.1-8b-instant", CHAT, check_chat
    ),
    Target(
        "together-chat",
        "openai",
        "chat",
        "together",
        "/together/v1",
        "meta-llama/Llama-3-8b",
        CHAT,
        check_chat,
    ),
    Target("anthropic-chat", "anthropic", "chat", None, "/anthropic", "claude-sonnet-4-5", CHAT, check_chat),
    Target("gemini-chat", "gemini", "chat", None, "/gemini", "gemini-2.5-flash", CHAT, check_chat),
    Target("openai-embed", "openai", "embed", "openai", "/v1", "text-embedding-3-small", EMBED, check_embed),
    Target("gemini-embed", "gemini", "embed", None, "/gemini", "gemini-embedding-001", EMBED, check_embed,
           "fakes"),
    Target("cohere-embed", "cohere", "embed", None, "/cohere/v2", "embed-v4.0", EMBED, check_embed, "fakes"),
    Target("cohere-rerank", "cohere", "rerank", None, "/cohere/v2", "rerank-v3.5", RERANK, check_rerank,
           "fakes"),
    Target("siliconflow-rerank", "cohere", "rerank", "siliconflow", "/siliconflow/v1",
           "BAAI/bge-reranker-v2-m3", RERANK, check_rerank, "fakes"),
    Target("jina-rerank", "jina", "rerank", None, "/jina/v1", "jina-reranker-v2-base-multilingual", RERANK,
           check_rerank, "fakes"),
    Target("voyage-rerank", "voyage", "rerank", None, "/voyage/v1", "rerank-2.5", RERANK, check_rerank,
           "fakes"),
    Target("dashscope-rerank", "dashscope", "rerank", None, "/dashscope/api/v1", "gte-rerank-v2", RERANK,
           check_rerank, "fakes"),
]  # fmt: skip


def adapter(target: Target, base_url: str, http: httpx2.AsyncClient, read_timeout_s: float = 5.0) -> Adapter:
    config = ProviderConfig(
        kind=target.kind, preset=target.preset, base_url=base_url, api_key_env="FAKE_KEY",
        connect_timeout_s=1.0, read_timeout_s=read_timeout_s,
    )  # fmt: skip
    return ADAPTERS[(target.kind, target.job_type)](ProviderContext("fake", config, API_KEY, http, {}))


@pytest.fixture(params=TARGETS, ids=[t.name for t in TARGETS])
def target(request: pytest.FixtureRequest) -> Target:
    chosen: Target = request.param
    return chosen


@pytest.fixture
def server(target: Target, request: pytest.FixtureRequest) -> str:
    """The fake this target talks to, started on first use."""
    url: str = request.getfixturevalue("llmock_url" if target.server == "llmock" else "fakes_url")
    return url


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient() as client:
        yield client


async def scenario(server: str, *behaviors: dict[str, Any]) -> None:
    async with httpx2.AsyncClient(base_url=server) as admin:
        assert (await admin.post("/_llmock/reset")).status_code == 200
        if behaviors:
            response = await admin.post("/_llmock/scenario", json={"behaviors": list(behaviors)})
            assert response.status_code in (200, 201), response.text


async def test_success_with_usage(target: Target, server: str, http: httpx2.AsyncClient) -> None:
    await scenario(server)
    result = await adapter(target, server + target.path, http).run(target.model, target.request)
    target.check(result)


CASES = [
    ({"type": "fail", "status": 400}, "provider_rejected"),
    ({"type": "fail", "status": 401}, "provider_auth"),
    ({"type": "fail", "status": 403}, "provider_auth"),
    ({"type": "fail", "status": 404, "message": "The model does not exist", "code": "model_not_found"},
     "provider_model_not_found"),
    ({"type": "fail", "status": 400, "code": "context_length_exceeded",
      "message": "This model's maximum context length is 8192 tokens. However, you requested 9000 tokens."},
     "provider_context_window"),
    ({"type": "fail", "status": 413}, "provider_context_window"),
    ({"type": "fail", "status": 400, "code": "content_filter", "message": "The response was filtered."},
     "provider_content_filtered"),
    ({"type": "fail", "status": 429, "retry_after": 2}, "provider_rate_limited"),
    ({"type": "fail", "status": 500}, "provider_unavailable"),
    ({"type": "fail", "status": 503}, "provider_unavailable"),
    ({"type": "fail", "status": 529}, "provider_unavailable"),
]  # fmt: skip


@pytest.mark.parametrize(("behavior", "code"), CASES, ids=[f"{b['status']}-{c}" for b, c in CASES])
async def test_failures_map_to_their_codes(
    target: Target, server: str, http: httpx2.AsyncClient, behavior: dict[str, Any], code: str
) -> None:
    await scenario(server, behavior)
    with pytest.raises(ProviderError) as caught:
        await adapter(target, server + target.path, http).run(target.model, target.request)
    error = caught.value
    assert error.code == code
    assert error.status == behavior["status"]
    assert error.provider == "fake"
    if behavior["status"] == 429:
        assert error.retry_after_s == 2
    assert type(error).retry == (code in ("provider_rate_limited", "provider_unavailable"))


async def test_a_read_timeout(target: Target, server: str, http: httpx2.AsyncClient) -> None:
    await scenario(server, {"type": "delay", "seconds": 1.5})
    with pytest.raises(ProviderError) as caught:
        await adapter(target, server + target.path, http, read_timeout_s=0.3).run(
            target.model, target.request
        )
    assert caught.value.code == "provider_timeout"


async def test_connection_refused(target: Target, http: httpx2.AsyncClient) -> None:
    nobody = f"http://127.0.0.1:{free_port()}{target.path}"
    with pytest.raises(ProviderError) as caught:
        await adapter(target, nobody, http).run(target.model, target.request)
    assert caught.value.code == "provider_unavailable"
    assert "could not reach fake" in caught.value.message


async def test_a_200_that_is_not_json(target: Target, http: httpx2.AsyncClient) -> None:
    async with canned_server(b"not json{") as base:
        with pytest.raises(ProviderError) as caught:
            await adapter(target, base + target.path, http).run(target.model, target.request)
    assert caught.value.code == "provider_bad_response"


async def test_keys_never_leak_into_errors(target: Target, server: str, http: httpx2.AsyncClient) -> None:
    await scenario(
        server, {"type": "fail", "status": 401, "message": f"Incorrect API key provided: {API_KEY}"}
    )
    with pytest.raises(ProviderError) as caught:
        await adapter(target, server + target.path, http).run(target.model, target.request)
    assert API_KEY not in caught.value.message
    assert API_KEY not in caught.value.body_excerpt


CHAT_TARGETS = [t for t in TARGETS if t.job_type == "chat"]


@pytest.mark.parametrize("chat_target", CHAT_TARGETS, ids=[t.name for t in CHAT_TARGETS])
async def test_a_tool_call_round_trip(chat_target: Target, llmock_url: str, http: httpx2.AsyncClient) -> None:
    await scenario(llmock_url)
    chat = adapter(chat_target, llmock_url + chat_target.path, http)
    city = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    tools = [
        {
            "type": "function",
            "function": {"name": "get_weather", "description": "Weather.", "parameters": city},
        }
    ]
    asked: dict[str, Any] = {
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": tools,
    }
    first = await chat.run(chat_target.model, ChatInput.model_validate(asked))
    assert isinstance(first, ChatResult)
    assert first.finish_reason == "tool_calls"
    assert first.message.tool_calls
    call = first.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert "city" in call.function.arguments
    answered = {
        **asked,
        "messages": [
            *asked["messages"],
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": '{"temperature_c": 21}'},
        ],
    }
    second = await chat.run(chat_target.model, ChatInput.model_validate(answered))
    assert isinstance(second, ChatResult)
    assert second.finish_reason == "stop"
    assert second.message.content


@pytest.mark.parametrize(
    ("preset", "body", "code"),
    [
        # MiniMax answers 200 and reports failures in base_resp (1002: rate limited, 1026: sensitive input).
        ("minimax", b'{"choices": null, "base_resp": {"status_code": 1002, "status_msg": "rate limit"}}',
         "provider_rate_limited"),
        ("minimax", b'{"base_resp": {"status_code": 1026, "status_msg": "input new_sensitive"}}',
         "provider_content_filtered"),
        # Ark can answer 200 with an error object and no choices.
        ("doubao", b'{"error": {"code": "InvalidParameter", "message": "The parameter `model` is invalid"}}',
         "provider_rejected"),
    ],
)  # fmt: skip
async def test_errors_inside_a_200_answer(
    preset: str, body: bytes, code: str, http: httpx2.AsyncClient
) -> None:
    target = Target(preset, "openai", "chat", preset, "/v1", "m", CHAT, check_chat)
    async with canned_server(body) as base:
        with pytest.raises(ProviderError) as caught:
            await adapter(target, base + "/v1", http).run("m", CHAT)
    assert caught.value.code == code


STREAMING = [t for t in TARGETS if hasattr(ADAPTERS[(t.kind, t.job_type)], "run_streaming")]


@pytest.fixture(params=STREAMING, ids=[t.name for t in STREAMING])
def streaming_target(request: pytest.FixtureRequest) -> Target:
    chosen: Target = request.param
    return chosen


async def test_a_streamed_answer_meets_the_same_contract(
    streaming_target: Target, llmock_url: str, http: httpx2.AsyncClient
) -> None:
    target = streaming_target
    await scenario(llmock_url)
    deltas: list[ChatDelta] = []
    chat = adapter(target, llmock_url + target.path, http)
    result = await chat.run_streaming(target.model, target.request, deltas.append)  # type: ignore[attr-defined]
    target.check(result)
    assert deltas, "no piece of the answer was handed over as it streamed"
    assert "".join(d.content or "" for d in deltas) == (result.message.content or "")
    streamed_calls = [c for d in deltas for c in d.tool_calls or [] if "id" in c]
    assert [c["id"] for c in streamed_calls] == [c.id for c in result.message.tool_calls or []]


@pytest.mark.parametrize(("behavior", "code"), [CASES[0], CASES[7], CASES[8]], ids=["400", "429", "500"])
async def test_a_refused_stream_maps_to_the_same_codes(
    streaming_target: Target, llmock_url: str, http: httpx2.AsyncClient, behavior: dict[str, Any], code: str
) -> None:
    target = streaming_target
    await scenario(llmock_url, behavior)
    chat = adapter(target, llmock_url + target.path, http)
    with pytest.raises(ProviderError) as caught:
        await chat.run_streaming(target.model, target.request, lambda _delta: None)  # type: ignore[attr-defined]
    assert caught.value.code == code and caught.value.status == behavior["status"]
