"""The OpenAI-compatible surface, driven by the official ``openai`` SDK over real HTTP.

The service runs as processes (API + worker) on its own Redis database; an ``openai``-kind provider
points at a private llmock whose scenarios script tool calls, 429s and mid-stream faults.
"""

from __future__ import annotations

import asyncio
import base64
import struct
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import orjson
import pytest
from openai import AsyncOpenAI

from aijobs.api import bodies
from aijobs.errors import StorageError
from aijobs.storage import LocalStore
from tests.conftest import TEST_ROUTING, Service, _llmock, own_db, run_service

OPENAI_ROUTING = """
[providers.llm]
kind = "openai"
base_url = "{llmock}/v1"
api_key_env = "DEEPSEEK_API_KEY"

[features.llm-chat]
type = "chat"
route = ["llm:gpt-4o-mini"]
attempts = 1
requeues = 0

[features.llm-then-sim]
type = "chat"
route = ["llm:gpt-4o-mini", "backup:fast"]
attempts = 1

[aliases]
"gpt-4o-mini" = "support-chat"
"cheap" = "feature/background"
"direct-backup" = "backup:fast"
"text-embedding-3-small" = "search"
"tts-1" = "speech"
"""


@pytest.fixture(scope="module")
def llmock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _llmock(tmp_path_factory, {})


@pytest.fixture(scope="module")
def openai_service(
    redis_url: str, s3_endpoint: str, llmock: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    text = TEST_ROUTING.read_text() + OPENAI_ROUTING.format(llmock=llmock)
    workdir = tmp_path_factory.mktemp("openai")
    with run_service(own_db(redis_url, 4), s3_endpoint, "aijobs-test", text, workdir) as svc:
        yield svc


@pytest.fixture
async def sdk(openai_service: Service) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(
        base_url=f"{openai_service.url}/v1", api_key=openai_service.key, max_retries=0
    ) as c:
        yield c


@pytest.fixture
async def scenario(llmock: str) -> AsyncIterator[Any]:
    """Script the private llmock: ``await scenario(behavior, ...)``; reset before and after."""
    async with httpx2.AsyncClient(base_url=llmock) as admin:

        async def script(*behaviors: dict[str, Any]) -> None:
            assert (
                await admin.post("/_llmock/scenario", json={"behaviors": list(behaviors)})
            ).status_code < 300

        await admin.post("/_llmock/reset")
        yield script
        await admin.post("/_llmock/reset")


async def job_of(service: Service, job_id: str) -> dict[str, Any]:
    async with httpx2.AsyncClient(base_url=service.url, headers=service.headers()) as http:
        response = await http.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


HELLO: Any = [{"role": "user", "content": "Hello there, aijobs"}]


async def test_chat_completion_is_a_recorded_job(sdk: AsyncOpenAI, openai_service: Service) -> None:
    raw = await sdk.chat.completions.with_raw_response.create(
        model="support-chat", messages=HELLO, user="u-42"
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "Simulated reply to: Hello there, aijobs"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "fast"
    usage = completion.usage
    assert usage is not None and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    headers = raw.headers
    assert (headers["x-aijobs-provider"], headers["x-aijobs-model"]) == ("sim", "fast")
    assert headers["x-aijobs-attempts"] == "1" and headers["x-aijobs-fallback-path"] == "sim:fast"
    assert float(headers["x-aijobs-cost-usd"]) > 0
    job = await job_of(openai_service, headers["x-aijobs-job-id"])
    assert job["status"] == "succeeded" and job["type"] == "chat" and job["feature"] == "support-chat"
    assert job["output"]["message"]["content"] == completion.choices[0].message.content
    assert job["usage"]["cost_usd"] == pytest.approx(float(headers["x-aijobs-cost-usd"]), rel=1e-6)
    assert job["metadata"] == {"user": "u-42"}
    assert job["id"] == completion.id


@pytest.mark.parametrize(
    ("model", "feature", "provider"),
    [("feature/support-chat", "support-chat", "sim"), ("gpt-4o-mini", "support-chat", "sim"),
     ("cheap", "background", "sim"), ("backup:fast", "support-chat", "backup"),
     ("direct-backup", "support-chat", "backup")],
)  # fmt: skip
async def test_model_names_resolve(sdk: AsyncOpenAI, model: str, feature: str, provider: str) -> None:
    raw = await sdk.chat.completions.with_raw_response.create(model=model, messages=HELLO)
    assert raw.headers["x-aijobs-feature"] == feature and raw.headers["x-aijobs-provider"] == provider


async def test_streamed_chunks_reassemble_with_usage_last(sdk: AsyncOpenAI, openai_service: Service) -> None:
    whole = await sdk.chat.completions.create(model="support-chat", messages=HELLO)
    stream = await sdk.chat.completions.create(
        model="support-chat", messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 3  # word by word
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]
    job = await job_of(openai_service, chunks[0].id)
    assert job["status"] == "succeeded" and job["output"]["message"]["content"] == text


async def test_a_real_wire_stream_with_tool_calls(sdk: AsyncOpenAI, scenario: Any) -> None:
    """An OpenAI-kind upstream (llmock) streams a tool call; the SDK reassembles it from our chunks."""
    await scenario(
        {"type": "reply", "tool_calls": [{"name": "lookup", "arguments": {"order": "A-1"}}], "times": 2}
    )
    tools: Any = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    whole = await sdk.chat.completions.create(model="llm-chat", messages=HELLO, tools=tools)
    call = whole.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert whole.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "lookup" and call.function.arguments.replace(" ", "") == '{"order":"A-1"}'  # type: ignore[union-attr]
    stream = await sdk.chat.completions.create(model="llm-chat", messages=HELLO, tools=tools, stream=True)
    fragments = [t for chunk in [c async for c in stream] for t in chunk.choices[0].delta.tool_calls or []]
    arguments = "".join(f.function.arguments or "" for f in fragments if f.function)
    assert fragments[0].id and fragments[0].function and fragments[0].function.name == "lookup"
    assert arguments.replace(" ", "") == '{"order":"A-1"}'


async def test_sim_tool_call_and_json_response_format(sdk: AsyncOpenAI) -> None:
    tools: Any = [{"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}]
    called = await sdk.chat.completions.create(
        model="support-chat", messages=HELLO, tools=tools, tool_choice="required", seed=7, stop=["zzz"]
    )
    assert called.choices[0].message.tool_calls[0].function.name == "search"  # type: ignore[index,union-attr]
    shaped = await sdk.chat.completions.create(
        model="support-chat", messages=HELLO, response_format={"type": "json_object"}
    )
    assert shaped.choices[0].message.content and shaped.choices[0].message.content.startswith('{"reply"')


async def test_n_choices_and_stop(sdk: AsyncOpenAI, openai_service: Service) -> None:
    raw = await sdk.chat.completions.with_raw_response.create(
        model="support-chat", messages=HELLO, n=3, stop="there"
    )
    completion = raw.parse()
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert {c.message.content for c in completion.choices} == {"Simulated reply to: Hello "}
    job = await job_of(openai_service, completion.id)
    assert len(job["attempts"]) == 3 and len(job["output"]["choices"]) == 3


async def test_fallback_is_invisible_except_in_headers(sdk: AsyncOpenAI) -> None:
    raw = await sdk.chat.completions.with_raw_response.create(model="fallback-chat", messages=HELLO)
    assert raw.parse().choices[0].message.content == "Simulated reply to: Hello there, aijobs"
    assert raw.headers["x-aijobs-fallback-path"] == "sim:flaky,backup:fast"
    assert raw.headers["x-aijobs-provider"] == "backup" and raw.headers["x-aijobs-attempts"] == "3"


async def test_a_stream_falls_back_before_its_first_byte(sdk: AsyncOpenAI, scenario: Any) -> None:
    await scenario({"type": "fail", "status": 500, "times": 1})
    raw = await sdk.chat.completions.with_raw_response.create(
        model="llm-then-sim", messages=HELLO, stream=True
    )
    assert raw.headers["x-aijobs-provider"] == "backup"
    text = "".join([c.choices[0].delta.content or "" async for c in raw.parse() if c.choices])
    assert text == "Simulated reply to: Hello there, aijobs"


async def test_a_stream_that_breaks_after_its_first_byte_ends_with_an_error(
    sdk: AsyncOpenAI, scenario: Any, openai_service: Service
) -> None:
    await scenario({"type": "stream_fault", "kind": "disconnect", "after_chunks": 2, "times": 1})
    stream = await sdk.chat.completions.create(model="llm-then-sim", messages=HELLO, stream=True)
    received: list[Any] = []

    async def read_all() -> None:
        async for chunk in stream:
            received.append(chunk)

    with pytest.raises(openai.APIError) as caught:
        await read_all()
    assert received and received[0].choices[0].delta.role == "assistant"
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "provider_unavailable"
    job = await job_of(openai_service, received[0].id)
    assert job["status"] == "failed" and [a["provider"] for a in job["attempts"]] == ["llm"]  # no fallback


async def test_upstream_rate_limits_are_a_429_with_retry_after(sdk: AsyncOpenAI, scenario: Any) -> None:
    await scenario({"type": "fail", "status": 429, "retry_after": 3, "times": 1})
    with pytest.raises(openai.RateLimitError) as caught:
        await sdk.chat.completions.create(model="llm-chat", messages=HELLO)
    assert caught.value.response.headers["retry-after"] == "3"
    assert caught.value.body["code"] == "provider_rate_limited"  # type: ignore[index]
    assert caught.value.response.headers["x-aijobs-job-id"].startswith("job_")


async def test_errors_map_to_the_sdk_classes(sdk: AsyncOpenAI, openai_service: Service) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        await sdk.chat.completions.create(model="support-chat", messages=[])
    assert bad.value.body == {  # OpenAI's shape, naming the field
        "code": "caller_invalid_request", "param": "messages", "type": "invalid_request_error",
        "message": "messages: List should have at least 1 item after validation, not 0",
    }  # fmt: skip
    with pytest.raises(openai.BadRequestError) as unknown:
        await sdk.chat.completions.create(model="support-chat", messages=HELLO, logit_bias={"1": 2})
    assert unknown.value.body["param"] == "logit_bias"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        await sdk.chat.completions.create(model="gpt-9-ultra", messages=HELLO)
    with pytest.raises(openai.BadRequestError, match="not a model name") as odd:  # never reaches a header
        await sdk.chat.completions.create(model="sim:модель", messages=HELLO)
    assert odd.value.body["param"] == "model"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError, match="not a model name"):  # never walks the provider's URL
        await sdk.chat.completions.create(model="sim:../../v1/files", messages=HELLO)
    with pytest.raises(openai.BadRequestError, match="serves embed requests"):
        await sdk.chat.completions.create(model="search", messages=HELLO)
    with pytest.raises(openai.AuthenticationError):
        async with AsyncOpenAI(base_url=f"{openai_service.url}/v1", api_key="aj_wrong", max_retries=0) as c:
            await c.chat.completions.create(model="support-chat", messages=HELLO)
    await sdk.chat.completions.create(model="capped-chat", messages=HELLO)  # spends the tiny budget
    await asyncio.sleep(0.3)  # budgets re-read the day's spend every refresh_s (0.1 s here)
    with pytest.raises(openai.RateLimitError, match="daily budget") as budget:
        await sdk.chat.completions.create(model="capped-chat", messages=HELLO)
    assert budget.value.body["type"] == "insufficient_quota"  # type: ignore[index]
    with pytest.raises(openai.InternalServerError):  # every target down: a 502
        await sdk.chat.completions.create(model="broken-chat", messages=HELLO)


async def test_embeddings_float_and_base64(sdk: AsyncOpenAI, openai_service: Service) -> None:
    floats = await sdk.embeddings.create(
        model="search", input=["refund policy", "shipping"], encoding_format="float"
    )
    assert [d.index for d in floats.data] == [0, 1] and len(floats.data[0].embedding) == 256
    default = await sdk.embeddings.create(model="text-embedding-3-small", input=["refund policy", "shipping"])
    assert default.data[0].embedding == pytest.approx(
        floats.data[0].embedding, abs=1e-6
    )  # SDK decoded base64
    async with httpx2.AsyncClient(base_url=openai_service.url, headers=openai_service.headers()) as http:
        raw = await http.post(
            "/v1/embeddings", json={"model": "search", "input": "x", "encoding_format": "base64"}
        )
        tokens = await http.post("/v1/embeddings", json={"model": "search", "input": [[1, 2, 3]]})
    packed = base64.b64decode(raw.json()["data"][0]["embedding"])
    assert len(packed) == 256 * 4 and struct.unpack("<256f", packed)[0] == pytest.approx(
        (await sdk.embeddings.create(model="search", input="x", encoding_format="float")).data[0].embedding[0]
    )
    assert tokens.status_code == 400 and tokens.json()["error"]["param"] == "input"


async def test_rerank_in_cohere_shape(openai_service: Service) -> None:
    body = {"model": "search-rerank", "query": "refund", "documents": ["shipping", {"text": "refund policy"}],
            "top_n": 1, "return_documents": True}  # fmt: skip
    async with httpx2.AsyncClient(base_url=openai_service.url, headers=openai_service.headers()) as http:
        response = await http.post("/v1/rerank", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["results"] == [
        {"index": 1, "relevance_score": pytest.approx(response.json()["results"][0]["relevance_score"]),
         "document": {"text": "refund policy"}}
    ]  # fmt: skip
    job = await job_of(openai_service, response.headers["x-aijobs-job-id"])
    assert job["type"] == "rerank" and job["status"] == "succeeded"


async def test_images_as_urls_and_base64(sdk: AsyncOpenAI, openai_service: Service) -> None:
    urls = await sdk.images.generate(prompt="a lighthouse", model="images", size="64x64", n=2)
    assert urls.data is not None and len(urls.data) == 2
    async with httpx2.AsyncClient() as http:
        fetched = await http.get(urls.data[0].url or "")
    assert fetched.status_code == 200 and fetched.content.startswith(b"\x89PNG")
    inline = await sdk.images.generate(prompt="a lighthouse", size="64x64", response_format="b64_json")
    assert inline.data is not None and base64.b64decode(inline.data[0].b64_json or "").startswith(b"\x89PNG")
    with pytest.raises(openai.BadRequestError) as bad:
        await sdk.images.generate(prompt="x", size="7x7")
    assert bad.value.body["param"] == "size"  # type: ignore[index]


async def test_speech_is_the_audio_itself(sdk: AsyncOpenAI, openai_service: Service) -> None:
    raw = await sdk.audio.speech.with_raw_response.create(
        model="tts-1", input="Hello from aijobs", voice="alloy", response_format="wav"
    )
    assert raw.headers["content-type"] == "audio/wav" and raw.content.startswith(b"RIFF")
    assert int(raw.headers["content-length"]) == len(raw.content)
    job = await job_of(openai_service, raw.headers["x-aijobs-job-id"])
    assert job["type"] == "speech" and job["output"]["audio"]["bytes"] == len(raw.content)
    with pytest.raises(openai.BadRequestError) as bad:
        await sdk.audio.speech.create(model="tts-1", input="", voice="alloy")
    assert bad.value.body["param"] == "input"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError, match="name a feature"):
        await sdk.audio.speech.create(model="sim:speech", input="hi", voice="alloy")


async def test_models_list_and_get(sdk: AsyncOpenAI) -> None:
    listed = {m.id: m for m in [m async for m in sdk.models.list()]}
    assert {"support-chat", "gpt-4o-mini", "cheap", "sim:fast", "backup:fast", "search"} <= set(listed)
    assert listed["gpt-4o-mini"].owned_by == "aijobs" and listed["sim:fast"].owned_by == "sim"
    one = await sdk.models.retrieve("sim:fast")
    assert one.id == "sim:fast"
    with pytest.raises(openai.NotFoundError):
        await sdk.models.retrieve("no-such-model")


async def test_a_stored_output_that_has_gone_is_an_error_answer(tmp_path: Path) -> None:
    blobs = LocalStore(tmp_path, "http://127.0.0.1:1", b"0123456789abcdef")
    with pytest.raises(StorageError, match="the output is no longer in the store"):  # a 503, no broken body
        await bodies.opened(blobs, "t/job_1/0.wav", "the output")
    await blobs.put("t/job_1/empty.wav", b"", "audio/wav")
    assert await bodies.whole(blobs, "t/job_1/empty.wav", "the output") == b""


async def test_batch_input_files_upload_checked_and_download(sdk: AsyncOpenAI) -> None:
    lines = [
        {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": "support-chat", "messages": [{"role": "user", "content": f"question {i}"}]}}
        for i in range(3)
    ]  # fmt: skip
    data = b"\n".join(orjson.dumps(line) for line in lines) + b"\n"
    uploaded = await sdk.files.create(file=("in.jsonl", data), purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.bytes == len(data)
    assert uploaded.model_extra is not None and uploaded.model_extra["lines"] == 3
    assert (await sdk.files.content(uploaded.id)).content == data
    assert (await sdk.files.retrieve(uploaded.id)).filename == "in.jsonl"
    broken = data + b'{"custom_id": "r1", "method": "POST"}\n{oops\n'
    with pytest.raises(openai.BadRequestError) as bad:
        await sdk.files.create(file=("bad.jsonl", broken), purpose="batch")
    error: Any = bad.value.body
    assert error["param"] == "file" and error["message"].startswith("file: 2 bad line(s); the first, line 4")
    assert [(d["line"], d["param"]) for d in error["details"]] == [(4, "url"), (5, None)]


METADATA_IMAGE = {"type": "image_url", "image_url": {"url": "http://169.254.169.254/latest/meta-data"}}


async def test_a_chat_image_the_guard_refuses_is_a_400_naming_the_part(sdk: AsyncOpenAI) -> None:
    messages: Any = [{"role": "user", "content": [{"type": "text", "text": "what is this?"}, METADATA_IMAGE]}]
    with pytest.raises(openai.BadRequestError) as refused:
        await sdk.chat.completions.create(model="support-chat", messages=messages)
    error: Any = refused.value.body
    assert error["param"] == "messages.0.content.1.image_url.url"
    assert "169.254.169.254" in error["message"]


async def test_a_batch_file_with_a_guarded_chat_image_is_refused_at_upload(sdk: AsyncOpenAI) -> None:
    body = {"model": "support-chat", "messages": [{"role": "user", "content": [METADATA_IMAGE]}]}
    line = {"custom_id": "r0", "method": "POST", "url": "/v1/chat/completions", "body": body}
    with pytest.raises(openai.BadRequestError) as refused:
        await sdk.files.create(file=("images.jsonl", orjson.dumps(line) + b"\n"), purpose="batch")
    error: Any = refused.value.body
    assert [(d["line"], d["param"]) for d in error["details"]] == [
        (1, "body.messages.0.content.0.image_url.url")
    ]
