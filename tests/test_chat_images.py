"""Chat image URLs: a provider fetches them itself, so each must pass the outbound guard (a 422
naming the part at submit, a refused batch line, a failed job if it slipped in); data: URLs pass."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import httpx2
import orjson
import pytest

from aijobs.api.openai.batchfile import check
from aijobs.api.openai.chat import ChatCompletionRequest
from aijobs.errors import InvalidRequest
from aijobs.files import Files
from aijobs.inputs import check_chat_images, inline_image
from aijobs.outbound import MAX_URL_LENGTH, Guard
from aijobs.types.chat import ChatInput
from tests.helpers import run

METADATA = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
PIXEL = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)
LONG = "https://93.184.215.14/" + "a" * 70_000


def messages(*urls: str) -> list[dict[str, Any]]:
    """A system message, then a user message of text followed by one image part per URL."""
    parts: list[dict[str, Any]] = [{"type": "text", "text": "what is in these?"}]
    parts += [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    return [{"role": "system", "content": "be brief"}, {"role": "user", "content": parts}]


def chat_job(*urls: str) -> dict[str, Any]:
    return {"type": "chat", "input": {"messages": messages(*urls)}}


REFUSED = [
    ((METADATA,), "input.messages.1.content.1.image_url.url", "link-local"),
    ((PIXEL, "http://127.0.0.1:6379/x.png"), "input.messages.1.content.2.image_url.url", "loopback"),
    (("http://[2002:a9fe:a9fe::]/x.png",), "input.messages.1.content.1.image_url.url", "6to4"),
    (("http://10.0.0.7/x.png",), "input.messages.1.content.1.image_url.url", "private-use"),
    ((LONG,), "input.messages.1.content.1.image_url.url", f"longer than {MAX_URL_LENGTH} characters"),
]


@pytest.mark.parametrize(("urls", "param", "why"), REFUSED)
async def test_a_chat_job_with_a_guarded_image_url_is_422_naming_the_part(
    client: httpx2.AsyncClient, urls: tuple[str, ...], param: str, why: str
) -> None:
    response = await client.post("/v1/jobs", json=chat_job(*urls))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("caller_invalid_request", param)
    assert error["message"].startswith(f"{param}: the image URL cannot be used") and why in error["message"]


async def test_a_chat_job_with_a_data_url_image_runs(client: httpx2.AsyncClient) -> None:
    job = await run(client, chat_job(PIXEL))
    assert job["status"] == "succeeded", job


async def test_a_native_batch_names_each_input_with_a_guarded_image(client: httpx2.AsyncClient) -> None:
    inputs = [{"messages": messages(PIXEL)}, {"messages": messages(METADATA)}, {"messages": messages(LONG)}]
    response = await client.post("/v1/batches", json={"type": "chat", "inputs": inputs})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "inputs.1.messages.1.content.1.image_url.url"
    assert [(d["index"], d["param"]) for d in error["details"]] == [
        (1, "inputs.1.messages.1.content.1.image_url.url"),
        (2, "inputs.2.messages.1.content.1.image_url.url"),
    ]
    assert error["details"][0]["message"].startswith("the image URL cannot be used: 169.254.169.254")


def line(custom_id: str, *urls: str) -> bytes:
    body = {"model": "background", "messages": messages(*urls)}
    return orjson.dumps(
        {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}
    )


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_a_batch_file_line_with_a_guarded_image_is_refused_naming_the_line() -> None:
    data = b"\n".join([line("a", PIXEL), line("b", METADATA), line("c", "http://[64:ff9b::7f00:1]/x")])
    checked = await check(chunks(data), max_lines=10, max_line_bytes=1 << 20, guard=Guard())
    assert checked.lines == 3 and checked.error_count == 2
    assert [(e.line, e.param) for e in checked.errors] == [
        (2, "body.messages.1.content.1.image_url.url"),
        (3, "body.messages.1.content.1.image_url.url"),
    ]
    assert "link-local" in checked.errors[0].message and "NAT64" in checked.errors[1].message
    unguarded = await check(chunks(data), max_lines=10, max_line_bytes=1 << 20)
    assert unguarded.error_count == 0  # without a guard (as before): only the shape is checked


async def test_the_openai_surface_names_the_part_without_a_prefix() -> None:
    body = {"model": "m", "messages": messages(PIXEL, METADATA)}
    request = ChatCompletionRequest.model_validate(body)
    with pytest.raises(InvalidRequest) as refused:
        await check_chat_images(request, Guard(), param_prefix="")
    assert refused.value.param == "messages.1.content.2.image_url.url"
    await check_chat_images(
        ChatCompletionRequest.model_validate({**body, "messages": messages(PIXEL)}), Guard(), param_prefix=""
    )


async def test_a_queued_chat_job_with_a_guarded_image_fails_when_it_runs() -> None:
    """A job queued before the submit checks existed (or a batch line) is checked again by the worker."""
    request = ChatInput.model_validate({"messages": messages(PIXEL, "http://[::ffff:a9fe:a9fe]/x")})
    async with httpx2.AsyncClient() as http:
        with pytest.raises(InvalidRequest, match=r"IPv4-mapped form of 169\.254\.169\.254") as refused:
            await inline_image(
                request, "t1", files=cast(Files, None), guard=Guard(), http=http, max_bytes=1024
            )
        assert refused.value.param == "input.messages.1.content.2.image_url.url"
        fine = ChatInput.model_validate({"messages": messages(PIXEL)})
        assert (
            await inline_image(fine, "t1", files=cast(Files, None), guard=Guard(), http=http, max_bytes=1)
            is fine
        )
