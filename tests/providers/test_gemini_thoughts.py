"""Gemini tool calls round-trip their thought signatures (issue 18, point 7), against a faithful fake.

Gemini 3 answers a follow-up turn whose function call lacks the ``thoughtSignature`` it came with with a
400; the adapter carries it on the tool call (``extra_content.google.thought_signature``) and puts it
back on the very ``functionCall`` part.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2
import pytest

from aijobs.errors import ProviderRejected
from aijobs.providers.base import ProviderContext
from aijobs.providers.gemini import GeminiChat
from aijobs.routing.config import ProviderConfig
from aijobs.types.chat import (
    WITHOUT_EXTRAS,
    ChatDelta,
    ChatInput,
    ChatResult,
    ExtraContent,
    Message,
    ToolCall,
    thought_signature,
)
from tests.fakes.gemini_thoughts import create_app
from tests.fakes.server import fake_providers_server

MODEL = "gemini-3-flash-preview"
TOOLS: Any = [
    {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}},
]
QUESTION = {"role": "user", "content": "Where is order A-1?"}


@pytest.fixture(scope="module")
def fake_url() -> Iterator[str]:
    with fake_providers_server(create_app()) as url:
        yield url


@pytest.fixture
async def fake(fake_url: str) -> AsyncIterator[httpx2.AsyncClient]:
    """The fake's control API (journal reset for this test)."""
    async with httpx2.AsyncClient(base_url=fake_url) as http:
        (await http.post("/_fake/reset")).raise_for_status()
        yield http


@pytest.fixture
async def gemini(fake_url: str) -> AsyncIterator[GeminiChat]:
    async with httpx2.AsyncClient() as client:
        config = ProviderConfig(kind="gemini", base_url=fake_url)
        yield GeminiChat(ProviderContext("gemini", config, "fake-gemini-key", client, {}))


def chat(*messages: Any, tools: bool = True) -> ChatInput:
    return ChatInput.model_validate({"messages": list(messages), "tools": TOOLS if tools else None})


def follow_up(first: ChatResult, *calls: ToolCall) -> list[Any]:
    """The conversation after ``first``: the question, the assistant's calls, one result for each."""
    calls = calls or tuple(first.message.tool_calls or [])
    assistant = Message(role="assistant", tool_calls=list(calls))
    results = [{"role": "tool", "tool_call_id": c.id, "content": '{"status": "shipped"}'} for c in calls]
    return [QUESTION, assistant, *results]


async def sent(fake: httpx2.AsyncClient) -> list[Any]:
    bodies: list[Any] = (await fake.get("/_fake/requests")).json()
    return bodies


async def test_a_tool_calls_signature_goes_back_on_its_part_and_the_turn_succeeds(
    gemini: GeminiChat, fake: httpx2.AsyncClient
) -> None:
    first = await gemini.run(MODEL, chat(QUESTION))
    assert first.finish_reason == "tool_calls" and first.message.tool_calls
    call = first.message.tool_calls[0]
    signature = thought_signature(call.extra_content)
    assert signature and call.function.name == "lookup"
    assert first.output()["message"]["tool_calls"][0]["extra_content"] == {
        "google": {"thought_signature": signature}
    }  # the job's output carries it, as the caller will send it back

    second = await gemini.run(MODEL, chat(*follow_up(first)))
    assert second.finish_reason == "stop"
    assert second.message.content == 'The tools said: {"status":"shipped"}'
    model_turn = (await sent(fake))[1]["contents"][1]
    assert model_turn["role"] == "model"
    assert model_turn["parts"] == [
        {
            "functionCall": {"name": "lookup", "args": {"q": "Where is order A-1?"}},
            "thoughtSignature": signature,
        }
    ]


async def test_without_its_signature_or_with_another_the_follow_up_is_rejected(gemini: GeminiChat) -> None:
    """The fake checks, as Gemini 3 does: the 400 is a rejection, which ends the route."""
    first = await gemini.run(MODEL, chat(QUESTION))
    call = (first.message.tool_calls or [])[0]
    bare = call.model_copy(update={"extra_content": None})
    with pytest.raises(ProviderRejected, match="missing a thought_signature") as missing:
        await gemini.run(MODEL, chat(*follow_up(first, bare)))
    assert missing.value.status == 400 and "INVALID_ARGUMENT" in str(missing.value)
    signature = thought_signature(call.extra_content) or ""
    altered = call.model_copy(update={"extra_content": ExtraContent.thought(signature[:-4] + "AAA=")})
    with pytest.raises(ProviderRejected, match="Corrupted thought signature"):
        await gemini.run(MODEL, chat(*follow_up(first, altered)))


async def test_parallel_calls_carry_one_signature_on_the_first_call(
    gemini: GeminiChat, fake: httpx2.AsyncClient
) -> None:
    question = {"role": "user", "content": "Look both up in parallel"}
    first = await gemini.run(MODEL, chat(question))
    calls = first.message.tool_calls or []
    assert [c.function.name for c in calls] == ["lookup", "weather"]
    assert thought_signature(calls[0].extra_content) and calls[1].extra_content is None
    conversation = follow_up(first)
    conversation[0] = question
    second = await gemini.run(MODEL, chat(*conversation))
    assert second.message.content and second.message.content.startswith("The tools said")
    parts = (await sent(fake))[1]["contents"][1]["parts"]
    assert ["thoughtSignature" in p for p in parts] == [True, False]


async def test_streamed_signatures_arrive_in_the_pieces_and_in_the_answer(
    gemini: GeminiChat, fake: httpx2.AsyncClient
) -> None:
    pieces: list[ChatDelta] = []
    first = await gemini.run_streaming(MODEL, chat(QUESTION), pieces.append)
    signature = thought_signature((first.message.tool_calls or [])[0].extra_content)
    assert signature
    assert pieces[0].tool_calls and pieces[0].tool_calls[0]["extra_content"] == {
        "google": {"thought_signature": signature}
    }
    text_pieces: list[ChatDelta] = []
    second = await gemini.run_streaming(MODEL, chat(*follow_up(first)), text_pieces.append)
    assert second.message.content == 'The tools said: {"status":"shipped"}'
    # The text's signature comes last, in a part of its own: a piece with nothing else in it.
    text_signature = thought_signature(second.message.extra_content)
    assert text_signature and text_pieces[-1] == ChatDelta(
        extra_content={"google": {"thought_signature": text_signature}}
    )
    assert second.output()["message"]["extra_content"] == {"google": {"thought_signature": text_signature}}

    answer = Message(
        role="assistant", content=second.message.content, extra_content=second.message.extra_content
    )
    third = await gemini.run(
        MODEL, chat(*follow_up(first), answer, {"role": "user", "content": "thanks"}, tools=False)
    )
    assert third.message.content == "You said: thanks"
    model_turn = (await sent(fake))[2]["contents"][3]
    assert model_turn["parts"] == [{"text": second.message.content, "thoughtSignature": text_signature}]


def test_the_record_keeps_signatures_and_other_providers_dumps_leave_them_out() -> None:
    signed = ExtraContent.model_validate({"google": {"thought_signature": "c2ln"}, "other": {"k": 1}})
    request = chat(
        QUESTION,
        {
            "role": "assistant",
            "content": "Checking",
            "extra_content": {"google": {"thought_signature": "dGV4dA=="}},
            "tool_calls": [
                {
                    "id": "c1",
                    "function": {"name": "lookup", "arguments": "{}"},
                    "extra_content": signed.model_dump(),
                },
                {"id": "c2", "function": {"name": "weather", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "{}"},
        {"role": "tool", "tool_call_id": "c2", "content": "{}"},
    )
    record = request.model_dump(mode="json", by_alias=True, exclude_none=True)  # as jobs are written
    assert record["messages"][1]["tool_calls"][0]["extra_content"] == {
        "google": {"thought_signature": "c2ln"}, "other": {"k": 1},
    }  # fmt: skip
    assert ChatInput.model_validate(record) == request  # as a worker reads it back
    plain = request.model_dump(mode="json", by_alias=True, exclude_none=True, exclude=WITHOUT_EXTRAS)
    assert "extra_content" not in plain["messages"][1]
    assert [set(c) for c in plain["messages"][1]["tool_calls"]] == [{"id", "type", "function"}] * 2
    del record["messages"][1]["extra_content"]
    for c in record["messages"][1]["tool_calls"]:
        c.pop("extra_content", None)
    assert plain == record  # nothing else is left out
