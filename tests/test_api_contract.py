"""The HTTP contract: auth and tenants, idempotency, validation errors, size limits, listing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest

from tests.conftest import Service
from tests.helpers import chat, submit, wait_for


async def test_requests_without_a_valid_key_are_401(service: Service) -> None:
    async with httpx2.AsyncClient(base_url=service.url) as http:
        for headers in ({}, {"Authorization": "Bearer aj_wrong"}, {"Authorization": "Basic abc"}):
            response = await http.post("/v1/jobs", json=chat("hi"), headers=headers)
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "caller_unauthorized"


async def test_a_tenant_never_sees_another_tenants_jobs(client: httpx2.AsyncClient, service: Service) -> None:
    job = await submit(client, chat("private"))
    async with httpx2.AsyncClient(base_url=service.url, headers=service.headers(service.other_key)) as other:
        assert (await other.get(f"/v1/jobs/{job['id']}")).status_code == 404
        assert (await other.post(f"/v1/jobs/{job['id']}/cancel")).status_code == 404
        listed = (await other.get("/v1/jobs", params={"limit": 100})).json()["data"]
        assert job["id"] not in {j["id"] for j in listed}
    mine = (await client.get("/v1/jobs", params={"limit": 100})).json()["data"]
    assert job["id"] in {j["id"] for j in mine}


async def test_idempotency_key_same_body_same_job_other_body_409(client: httpx2.AsyncClient) -> None:
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    first = await client.post("/v1/jobs", json=chat("once"), headers=headers)
    # The same body with keys reordered and other spacing is still the same body.
    same = b'{"input": {"messages": [{"content": "once", "role": "user"}]}, "type": "chat"}'
    again = await client.post("/v1/jobs", content=same, headers=headers)
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json()["id"] == again.json()["id"]
    conflict = await client.post("/v1/jobs", json=chat("twice"), headers=headers)
    assert conflict.status_code == 409
    assert conflict.json()["error"]["param"] == "Idempotency-Key"


async def test_concurrent_duplicate_posts_make_exactly_one_job(client: httpx2.AsyncClient) -> None:
    tag = str(uuid.uuid4())
    body = {**chat("dup"), "metadata": {"tag": tag}}
    headers = {"Idempotency-Key": tag}
    responses = await asyncio.gather(
        *(client.post("/v1/jobs", json=body, headers=headers) for _ in range(20))
    )
    assert sorted(r.status_code for r in responses) == [200] * 19 + [202]
    assert len({r.json()["id"] for r in responses}) == 1
    await wait_for(client, responses[0].json()["id"])
    listed = (await client.get("/v1/jobs", params={"limit": 100})).json()["data"]
    assert sum(1 for j in listed if j["metadata"].get("tag") == tag) == 1


BAD_INPUTS: list[tuple[dict[str, Any], str | None]] = [
    ({"type": "chat", "input": {"messages": []}}, "input.messages"),
    ({"type": "chat", "input": {"messages": [{"role": "robot", "content": "x"}]}}, "input.messages.0.role"),
    (
        {"type": "chat", "input": {"messages": [{"role": "user", "content": "x"}], "temperature": 3}},
        "input.temperature",
    ),
    ({"type": "chat", "input": {"messages": [{"role": "user", "content": "x" * 400_001}]}}, None),
    ({"type": "embed", "input": {"input": []}}, "input.input"),
    ({"type": "embed", "input": {"input": "x", "dimensions": 0}}, "input.dimensions"),
    ({"type": "rerank", "input": {"query": "q", "documents": ["a"], "top_n": 5}}, "input.top_n"),
    ({"type": "rerank", "input": {"query": "", "documents": ["a"]}}, "input.query"),
    ({"type": "image", "input": {"prompt": "x", "size": "10x10"}}, "input.size"),
    ({"type": "image", "input": {"prompt": "x", "n": 11}}, "input.n"),
    ({"type": "speech", "input": {"text": "x", "speed": 9}}, "input.speed"),
    ({"type": "video", "input": {"prompt": "x", "duration_s": 0}}, "input.duration_s"),
    ({"type": "video", "input": {"prompt": "x", "aspect_ratio": "5:1"}}, "input.aspect_ratio"),
    (
        {"type": "chat", "input": {"messages": [{"role": "user", "content": "x"}], "tempreature": 1}},
        "input.tempreature",
    ),
    ({"type": "chat", "input": {"messages": [{"role": "user", "content": 5}]}}, "input.messages.0.content"),
    (
        {
            "type": "chat",
            "metadata": {"k" * 65: "v"},
            "input": {"messages": [{"role": "user", "content": "x"}]},
        },
        "metadata." + "k" * 65,
    ),
    ({"type": "image", "input": {"prompt": "x", "size": "\u0666\u0664x\u0666\u0664"}}, "input.size"),
    ({"type": "painting", "input": {}}, "type"),
    (
        {
            "type": "chat",
            "input": {"messages": [{"role": "user", "content": [{"type": "video", "url": "x"}]}]},
        },
        "input.messages.0.content.0.type",
    ),
    ({"input": {}}, "type"),
    (
        {"type": "chat", "feature": "Bad Name", "input": {"messages": [{"role": "user", "content": "x"}]}},
        "feature",
    ),
    (
        {
            "type": "chat",
            "feature": "no-such-feature",
            "input": {"messages": [{"role": "user", "content": "x"}]},
        },
        "feature",
    ),
    (
        {"type": "chat", "feature": "search", "input": {"messages": [{"role": "user", "content": "x"}]}},
        "feature",
    ),
]


@pytest.mark.parametrize(("body", "param"), BAD_INPUTS)
async def test_bad_input_is_422_naming_the_field(
    client: httpx2.AsyncClient, body: dict[str, Any], param: str | None
) -> None:
    response = await client.post("/v1/jobs", json=body)
    if param is None:  # over the body limit before validation even starts
        assert response.status_code == 413
        return
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "caller_invalid_request"
    assert error["param"] == param
    assert error["message"]


async def test_malformed_json_is_422(client: httpx2.AsyncClient) -> None:
    response = await client.post(
        "/v1/jobs", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["message"] == "the body is not valid JSON"


async def test_oversize_bodies_are_413_declared_or_streamed(client: httpx2.AsyncClient) -> None:
    big = b'{"type": "chat", "input": {"messages": [{"role": "user", "content": "' + b"x" * 300_000 + b'"}]}}'
    declared = await client.post("/v1/jobs", content=big)
    assert declared.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 16_384):
            yield big[i : i + 16_384]

    streamed = await client.post("/v1/jobs", content=chunks())
    assert streamed.status_code == 413
    assert streamed.json()["error"]["code"] == "caller_payload_too_large"


async def test_list_pages_with_a_cursor_and_filters(service: Service, redis_url: str) -> None:
    from redis.asyncio import Redis

    from aijobs.apikeys import ApiKeys

    redis = Redis.from_url(redis_url)
    key = await ApiKeys(redis).create(f"pager-{uuid.uuid4().hex[:8]}")
    await redis.aclose()
    async with httpx2.AsyncClient(base_url=service.url, headers=service.headers(key)) as http:
        ids = [(await submit(http, chat(f"m{i}")))["id"] for i in range(5)]
        embed = await submit(http, {"type": "embed", "input": {"input": "x"}})
        seen, after = [], None
        while True:
            params: dict[str, Any] = {"limit": 2, "type": "chat"}
            if after:
                params["after"] = after
            page = (await http.get("/v1/jobs", params=params)).json()
            seen += [j["id"] for j in page["data"]]
            if not page["has_more"]:
                break
            after = page["next_after"]
        assert seen == list(reversed(ids))
        only_embed = (await http.get("/v1/jobs", params={"type": "embed"})).json()["data"]
        assert [j["id"] for j in only_embed] == [embed["id"]]
        assert "input" not in only_embed[0]  # list items are summaries: no megabytes of input or output
        assert "output" not in only_embed[0]
        bad = await http.get("/v1/jobs", params={"status": "sleeping"})
        assert bad.status_code == 422
        assert bad.json()["error"]["param"] == "status"


async def test_health_readiness_and_docs(service: Service) -> None:
    async with httpx2.AsyncClient(base_url=service.url) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        ready = (await http.get("/readyz")).json()
        assert ready == {"status": "ready", "checks": {"redis": "ok", "blobs": "ok"}}
        assert (await http.get("/docs")).status_code == 200
        schema = (await http.get("/openapi.json")).json()
        body = schema["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body["discriminator"]["propertyName"] == "type"
        assert "ChatInput" in schema["components"]["schemas"]
        missing = await http.get("/v1/nothing-here")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "caller_not_found"


async def test_a_body_that_is_not_an_object_is_422(client: httpx2.AsyncClient) -> None:
    for body in (b"[]", b"42", b'"chat"', b"null"):
        response = await client.post("/v1/jobs", content=body)
        assert response.status_code == 422
        assert response.json()["error"] == {
            "code": "caller_invalid_request",
            "message": "the body must be a JSON object",
            "param": None,
            "type": "invalid_request_error",
        }


async def test_an_empty_idempotency_key_is_refused_not_shared(client: httpx2.AsyncClient) -> None:
    response = await client.post("/v1/jobs", json=chat("x"), headers={"Idempotency-Key": ""})
    assert response.status_code == 422
    assert response.json()["error"]["param"] == "idempotency-key"


#: Longer than any URL the API accepts (MAX_URL_LENGTH, 8,192) and than httpx2's own 65,536.
LONG_URL = "https://93.184.215.14/" + "a" * 70_000
_USER = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": LONG_URL}}]}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"type": "image", "input": {"prompt": "x", "image": LONG_URL}}, "input.image"),
        ({"type": "video", "input": {"prompt": "x", "image": LONG_URL}}, "input.image"),
        ({"type": "chat", "input": {"messages": [_USER]}}, "input.messages.0.content.0.image_url.url"),
        ({**chat("x"), "webhook": {"url": LONG_URL}}, "webhook.url"),
    ],
)
async def test_an_over_long_url_is_422_naming_the_field(
    client: httpx2.AsyncClient, body: dict[str, Any], param: str
) -> None:
    response = await client.post("/v1/jobs", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["param"] == param


async def test_an_over_long_webhook_endpoint_url_is_422(client: httpx2.AsyncClient) -> None:
    response = await client.post("/v1/webhooks", json={"url": LONG_URL})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["param"] == "url"
