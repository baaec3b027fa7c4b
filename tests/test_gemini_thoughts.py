"""Gemini's thought signatures through the service (issue 18, point 7): the OpenAI SDK round-trips them
on its own (``extra_content`` on the tool call, as Gemini's OpenAI-compatible API carries it), and a
job's output handed back as the next job's input keeps them through the record and the worker.

The service runs as processes on its own Redis database; a ``gemini``-kind provider points at the
faithful fake (tests/fakes/gemini_thoughts.py), which answers 400 as Gemini 3 does when a signature
is missing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from openai import AsyncOpenAI

from tests.conftest import TEST_ROUTING, Service, own_db, run_service
from tests.fakes.gemini_thoughts import create_app
from tests.fakes.server import fake_providers_server
from tests.helpers import run

DB = 12
GEMINI_ROUTING = """
[providers.gemini3]
kind = "gemini"
base_url = "{fake}"
api_key_env = "GEMINI_API_KEY"

[features.gemini-tools]
type = "chat"
route = ["gemini3:gemini-3-flash-preview"]
attempts = 1
requeues = 0
"""
TOOLS: Any = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
QUESTION: Any = {"role": "user", "content": "Where is order A-1?"}
RESULT = '{"status": "shipped"}'


@pytest.fixture(scope="module")
def fake_url() -> Iterator[str]:
    with fake_providers_server(create_app()) as url:
        yield url


@pytest.fixture(scope="module")
def gemini_service(
    redis_url: str, s3_endpoint: str, fake_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    text = TEST_ROUTING.read_text() + GEMINI_ROUTING.format(fake=fake_url)
    workdir: Path = tmp_path_factory.mktemp("gemini-thoughts")
    env = {"GEMINI_API_KEY": "fake-gemini-key-0000"}
    with run_service(own_db(redis_url, DB), s3_endpoint, "aijobs-test", text, workdir, env) as svc:
        yield svc


@pytest.fixture
async def sdk(gemini_service: Service) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(
        base_url=f"{gemini_service.url}/v1", api_key=gemini_service.key, max_retries=0
    ) as c:
        yield c


async def model_turn(fake_url: str) -> dict[str, Any]:
    """The assistant's turn in the last request the fake received."""
    async with httpx2.AsyncClient(base_url=fake_url) as http:
        last = (await http.get("/_fake/requests")).json()[-1]
    turn: dict[str, Any] = last["contents"][1]
    return turn


async def test_the_openai_sdk_round_trips_the_signature_by_appending_the_message(
    sdk: AsyncOpenAI, fake_url: str
) -> None:
    first = await sdk.chat.completions.create(model="gemini-tools", messages=[QUESTION], tools=TOOLS)
    message = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls" and message.tool_calls
    call = message.tool_calls[0]
    signature = (call.model_extra or {})["extra_content"]["google"]["thought_signature"]
    assert signature
    # The usual loop: append the answer's message as the SDK gave it, then the tool's result.
    messages: Any = [QUESTION, message, {"role": "tool", "tool_call_id": call.id, "content": RESULT}]
    second = await sdk.chat.completions.create(model="gemini-tools", messages=messages, tools=TOOLS)
    assert second.choices[0].message.content == 'The tools said: {"status":"shipped"}'
    assert (await model_turn(fake_url))["parts"][0]["thoughtSignature"] == signature

    # A caller that keeps only id, type and function loses it, and Gemini 3 refuses the turn.
    bare = {"id": call.id, "type": "function", "function": call.model_dump()["function"]}
    messages[1] = {"role": "assistant", "content": None, "tool_calls": [bare]}
    with pytest.raises(openai.BadRequestError, match="missing a thought_signature"):
        await sdk.chat.completions.create(model="gemini-tools", messages=messages, tools=TOOLS)


async def test_streamed_tool_calls_carry_the_signature_in_their_fragment(
    sdk: AsyncOpenAI, fake_url: str
) -> None:
    stream = await sdk.chat.completions.create(
        model="gemini-tools", messages=[QUESTION], tools=TOOLS, stream=True
    )
    fragments = [t for chunk in [c async for c in stream] for t in chunk.choices[0].delta.tool_calls or []]
    extra = (fragments[0].model_extra or {})["extra_content"]
    assert extra["google"]["thought_signature"]
    assert fragments[0].function and fragments[0].id
    call = {
        "id": fragments[0].id, "type": "function", "extra_content": extra,
        "function": {"name": fragments[0].function.name, "arguments": fragments[0].function.arguments},
    }  # fmt: skip
    messages: Any = [
        QUESTION,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": fragments[0].id, "content": RESULT},
    ]
    answer = await sdk.chat.completions.create(
        model="gemini-tools", messages=messages, tools=TOOLS, stream=True
    )
    chunks = [c async for c in answer]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == 'The tools said: {"status":"shipped"}'
    signed = [c.choices[0].delta.model_extra for c in chunks if c.choices and c.choices[0].delta.model_extra]
    assert signed and signed[-1]["extra_content"]["google"]["thought_signature"]  # the text's, last
    assert (await model_turn(fake_url))["parts"][0]["thoughtSignature"] == extra["google"][
        "thought_signature"
    ]


async def test_a_jobs_output_sent_back_as_input_keeps_its_signature(gemini_service: Service) -> None:
    """Through the record and the worker: the output's message is the next job's assistant turn."""
    async with httpx2.AsyncClient(
        base_url=gemini_service.url, headers=gemini_service.headers(), timeout=30
    ) as client:
        body: dict[str, Any] = {
            "type": "chat", "feature": "gemini-tools", "input": {"messages": [QUESTION], "tools": TOOLS},
        }  # fmt: skip
        first = await run(client, body)
        assert first["status"] == "succeeded", first
        message = first["output"]["message"]
        call = message["tool_calls"][0]
        assert call["extra_content"]["google"]["thought_signature"]
        result = {"role": "tool", "tool_call_id": call["id"], "content": RESULT}
        body["input"]["messages"] = [QUESTION, message, result]
        second = await run(client, body)
        assert second["status"] == "succeeded", second
        assert second["output"]["message"]["content"] == 'The tools said: {"status":"shipped"}'
        assert second["input"]["messages"][1]["tool_calls"][0]["extra_content"] == call["extra_content"]
