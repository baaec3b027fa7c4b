"""The provider fakes themselves, over real HTTP: success shapes, strictness, faults and the journal."""

from __future__ import annotations

import math
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2
import pytest

from tests.fakes.rerank import relevance
from tests.fakes.server import fake_providers_server

KEY = "sk-fake-0123456789"
BEARER = {"Authorization": f"Bearer {KEY}"}
GOOG = {"x-goog-api-key": KEY}
QUERY = "blue whales"
DOCS = ["a red fox in the snow", "the blue whale is the largest animal", "whales sing"]
TLS = ssl.create_default_context()  # shared: building one per client costs ~50 ms, and the fake is plain HTTP

#: One valid call per provider: path, body, auth headers.
CALLS: dict[str, tuple[str, dict[str, Any], dict[str, str]]] = {
    "gemini": (
        "/gemini/v1beta/models/text-embedding-004:embedContent",
        {"content": {"parts": [{"text": "a red fox"}]}},
        GOOG,
    ),
    "cohere": ("/cohere/v2/rerank", {"model": "rerank-v3.5", "query": QUERY, "documents": DOCS}, BEARER),
    "jina": ("/jina/v1/rerank", {"model": "jina-reranker-v2", "query": QUERY, "documents": DOCS}, BEARER),
    "voyage": ("/voyage/v1/rerank", {"model": "rerank-2.5", "query": QUERY, "documents": DOCS}, BEARER),
    "dashscope": (
        "/dashscope/api/v1/services/rerank/text-rerank/text-rerank",
        {"model": "gte-rerank-v2", "input": {"query": QUERY, "documents": DOCS}},
        BEARER,
    ),
    "siliconflow": (
        "/siliconflow/v1/rerank",
        {"model": "BAAI/bge-reranker-v2-m3", "query": QUERY, "documents": DOCS},
        BEARER,
    ),
}


def error_of(provider: str, body: Any) -> tuple[str, Any]:
    """(message, code) from an error body, asserting it has exactly the provider's documented shape."""
    if provider == "gemini":
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "status"}
        return body["error"]["message"], body["error"]["status"]
    if provider == "cohere":
        assert {"id", "message"} <= set(body) <= {"id", "message", "type"}
        return body["message"], body.get("type")
    if provider == "dashscope":
        assert set(body) == {"code", "message", "request_id"}
        return body["message"], body["code"]
    if provider == "siliconflow":
        assert set(body) == {"code", "message", "data"} and body["data"] is None
        return body["message"], body["code"]
    assert set(body) == {"detail"}
    return body["detail"], None


@pytest.fixture(scope="module")
def fake_url() -> Iterator[str]:
    with fake_providers_server() as url:
        yield url


@pytest.fixture
async def http(fake_url: str) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(base_url=fake_url, timeout=5, verify=TLS) as client:
        assert (await client.post("/_llmock/reset")).status_code == 200
        yield client


async def scenario(http: httpx2.AsyncClient, *behaviors: dict[str, Any]) -> None:
    response = await http.post("/_llmock/scenario", json={"behaviors": list(behaviors)})
    assert response.status_code == 201, response.text
    assert response.json()["queued"] == len(behaviors)


async def call(http: httpx2.AsyncClient, provider: str, **changes: Any) -> httpx2.Response:
    path, body, headers = CALLS[provider]
    return await http.post(path, json={**body, **changes}, headers=headers)


async def test_health(http: httpx2.AsyncClient) -> None:
    assert (await http.get("/health")).status_code == 200


async def test_gemini_embed_content(http: httpx2.AsyncClient) -> None:
    first, again = (await call(http, "gemini")).json(), (await call(http, "gemini")).json()
    values = first["embedding"]["values"]
    assert set(first) == {"embedding"} and len(values) == 768
    assert math.isclose(math.fsum(x * x for x in values), 1.0)
    assert again == first
    other = await call(
        http, "gemini", content={"parts": [{"text": "a blue whale"}]}, outputDimensionality=256
    )
    assert len(other.json()["embedding"]["values"]) == 256
    assert other.json()["embedding"]["values"] != values[:256]


async def test_gemini_batch_embed_contents_in_order(http: httpx2.AsyncClient) -> None:
    path = "/gemini/v1beta/models/gemini-embedding-001:batchEmbedContents"
    model = "models/gemini-embedding-001"
    texts = ["one", "two", "three"]
    requests = [
        {"model": model, "content": {"parts": [{"text": t}]}, "outputDimensionality": 64} for t in texts
    ]
    response = await http.post(path, json={"requests": requests}, headers=GOOG)
    assert response.status_code == 200, response.text
    embeddings = response.json()["embeddings"]
    assert [len(e["values"]) for e in embeddings] == [64, 64, 64]
    single = await call(http, "gemini", content={"parts": [{"text": "two"}]}, outputDimensionality=64)
    assert embeddings[1]["values"] == single.json()["embedding"]["values"]

    requests[0]["model"] = "models/text-embedding-004"
    wrong = await http.post(path, json={"requests": requests}, headers=GOOG)
    assert wrong.status_code == 400
    assert error_of("gemini", wrong.json())[1] == "INVALID_ARGUMENT"


async def test_cohere_rerank(http: httpx2.AsyncClient) -> None:
    body = (await call(http, "cohere", top_n=2)).json()
    assert set(body) == {"id", "results", "meta"}
    assert body["meta"] == {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}}
    assert [r["index"] for r in body["results"]] == [1, 2]
    assert set(body["results"][0]) == {"index", "relevance_score"}
    assert body["results"][0]["relevance_score"] == 1.0
    assert body["results"][0]["relevance_score"] > body["results"][1]["relevance_score"] > 0


async def test_cohere_embed(http: httpx2.AsyncClient) -> None:
    texts = ["a red fox", "a blue whale"]
    body = {
        "model": "embed-v4.0",
        "texts": texts,
        "input_type": "search_document",
        "embedding_types": ["float"],
    }
    response = await http.post("/cohere/v2/embed", json=body, headers=BEARER)
    assert response.status_code == 200, response.text
    data = response.json()
    assert [len(v) for v in data["embeddings"]["float"]] == [1536, 1536]
    assert data["texts"] == texts and data["id"]
    assert data["meta"]["billed_units"]["input_tokens"] == 6
    small = await http.post("/cohere/v2/embed", json={**body, "output_dimension": 256}, headers=BEARER)
    assert [len(v) for v in small.json()["embeddings"]["float"]] == [256, 256]
    del body["input_type"]
    missing = await http.post("/cohere/v2/embed", json=body, headers=BEARER)
    assert missing.status_code == 400
    assert "input_type" in error_of("cohere", missing.json())[0]


async def test_jina_rerank(http: httpx2.AsyncClient) -> None:
    body = (await call(http, "jina")).json()
    assert body["model"] == "jina-reranker-v2" and body["usage"]["total_tokens"] > 0
    assert body["results"][0] == {"index": 1, "relevance_score": 1.0, "document": {"text": DOCS[1]}}
    bare = (await call(http, "jina", return_documents=False, top_n=1)).json()
    assert bare["results"] == [{"index": 1, "relevance_score": 1.0}]


async def test_voyage_rerank_uses_top_k_and_data(http: httpx2.AsyncClient) -> None:
    body = (await call(http, "voyage", top_k=1, return_documents=True)).json()
    assert body["object"] == "list" and body["model"] == "rerank-2.5" and body["usage"]["total_tokens"] > 0
    assert body["data"] == [{"index": 1, "relevance_score": 1.0, "document": DOCS[1]}]
    assert "document" not in (await call(http, "voyage")).json()["data"][0]
    rejected = await call(http, "voyage", top_n=1)
    assert rejected.status_code == 400
    assert "top_n" in error_of("voyage", rejected.json())[0]


async def test_dashscope_rerank(http: httpx2.AsyncClient) -> None:
    body = (await call(http, "dashscope", parameters={"top_n": 2, "return_documents": True})).json()
    assert set(body) == {"output", "usage", "request_id"} and body["usage"]["total_tokens"] > 0
    assert body["output"]["results"][0] == {"index": 1, "relevance_score": 1.0, "document": {"text": DOCS[1]}}
    assert len(body["output"]["results"]) == 2
    flat = await call(http, "dashscope", input=None, query=QUERY, documents=DOCS)
    assert flat.status_code == 400
    assert error_of("dashscope", flat.json())[1] == "InvalidParameter"


async def test_siliconflow_rerank(http: httpx2.AsyncClient) -> None:
    body = (await call(http, "siliconflow", return_documents=True)).json()
    assert body["id"] and body["meta"]["tokens"]["input_tokens"] > 0
    assert body["meta"]["tokens"]["output_tokens"] == 0
    assert body["results"][0] == {"index": 1, "relevance_score": 1.0, "document": {"text": DOCS[1]}}
    assert [r["index"] for r in body["results"]] == [1, 2, 0]


@pytest.mark.parametrize("provider", sorted(CALLS))
@pytest.mark.parametrize("field", ["query", "documents"])
async def test_a_missing_field_is_a_400_in_the_provider_shape(
    http: httpx2.AsyncClient, provider: str, field: str
) -> None:
    path, body, headers = CALLS[provider]
    if provider == "dashscope":
        body = {**body, "input": {k: v for k, v in body["input"].items() if k != field}}
    body = {k: v for k, v in body.items() if k != field}
    if provider == "gemini":
        body = {"contents": body["content"]}  # a wrong field name
    response = await http.post(path, json=body, headers=headers)
    assert response.status_code == 400
    error_of(provider, response.json())


@pytest.mark.parametrize("provider", sorted(CALLS))
async def test_fail_answers_in_the_provider_shape(http: httpx2.AsyncClient, provider: str) -> None:
    await scenario(
        http,
        {"type": "fail", "status": 429, "retry_after": 2},
        {"type": "fail", "status": 503},
        {"type": "fail", "status": 404, "message": "The model does not exist", "code": "42"},
    )
    limited = await call(http, provider)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "2"
    assert error_of(provider, limited.json())[0] == "Rate limit exceeded."
    unavailable = await call(http, provider)
    assert unavailable.status_code == 503 and "retry-after" not in unavailable.headers
    error_of(provider, unavailable.json())
    missing = await call(http, provider)
    message, code = error_of(provider, missing.json())
    assert missing.status_code == 404 and message == "The model does not exist"
    assert code == {"jina": None, "voyage": None, "siliconflow": 42}.get(provider, "42")
    assert (await call(http, provider)).status_code == 200


async def test_default_error_codes(http: httpx2.AsyncClient) -> None:
    await scenario(http, {"type": "fail", "status": 429, "times": 2})
    gemini, dashscope = await call(http, "gemini"), await call(http, "dashscope")
    assert error_of("gemini", gemini.json())[1] == "RESOURCE_EXHAUSTED"
    assert error_of("dashscope", dashscope.json())[1] == "Throttling.RateQuota"
    assert "retry-after" not in gemini.headers


@pytest.mark.parametrize("provider", sorted(CALLS))
async def test_missing_auth_is_a_401(http: httpx2.AsyncClient, provider: str) -> None:
    path, body, _ = CALLS[provider]
    response = await http.post(path, json=body)
    assert response.status_code == 401
    message, code = error_of(provider, response.json())
    assert message
    if provider == "gemini":
        assert code == "UNAUTHENTICATED"
        assert (await http.post(path, json=body, headers={"x-goog-api-key": "x"})).status_code == 200
    else:
        basic = await http.post(path, json=body, headers={"Authorization": "Basic abc"})
        assert basic.status_code == 401


async def test_delay_then_normal(http: httpx2.AsyncClient) -> None:
    await scenario(http, {"type": "delay", "seconds": 0.3})
    started = time.monotonic()
    assert (await call(http, "voyage")).status_code == 200
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    assert (await call(http, "voyage")).status_code == 200
    assert time.monotonic() - started < 0.3


async def test_times_and_match(http: httpx2.AsyncClient) -> None:
    await scenario(
        http,
        {"type": "fail", "status": 500, "times": 2, "match": {"provider": "jina"}},
        {"type": "fail", "status": 502, "match": {"path": "/cohere/*", "model": "rerank-*"}},
    )
    assert (await call(http, "voyage")).status_code == 200
    assert [(await call(http, "jina")).status_code for _ in range(3)] == [500, 500, 200]
    assert (await call(http, "cohere")).status_code == 502
    assert (await http.get("/_llmock/scenario")).json() == {"pending": []}


async def test_scenario_validation(http: httpx2.AsyncClient) -> None:
    for behaviors in ([], [{"type": "stream_fault"}], [{"type": "fail", "status": 200}], [{"type": "delay"}]):
        response = await http.post("/_llmock/scenario", json={"behaviors": behaviors})
        assert response.status_code == 400, behaviors


async def test_requests_are_recorded_and_reset(http: httpx2.AsyncClient) -> None:
    await call(http, "gemini")
    await call(http, "cohere")
    await http.post("/voyage/v1/rerannk", json={}, headers=BEARER)
    recorded = (await http.get("/_llmock/requests")).json()
    assert [(r["method"], r["path"]) for r in recorded] == [
        ("POST", CALLS["gemini"][0]),
        ("POST", "/cohere/v2/rerank"),
        ("POST", "/voyage/v1/rerannk"),
    ]
    assert recorded[0]["headers"]["x-goog-api-key"] == KEY
    assert recorded[1]["headers"]["authorization"] == f"Bearer {KEY}"
    assert recorded[1]["json"] == CALLS["cohere"][1]
    assert (await http.post("/_llmock/reset")).status_code == 200
    assert (await http.get("/_llmock/requests")).json() == []


async def test_a_wrong_path_is_a_404_in_the_provider_shape(http: httpx2.AsyncClient) -> None:
    response = await http.post("/voyage/v1/rerannk", json={}, headers=BEARER)
    assert response.status_code == 404
    assert "rerannk" in error_of("voyage", response.json())[0]


def test_relevance() -> None:
    assert relevance("red cars", "A red car.") == 1.0
    assert relevance("red cars", "a red fox") == 0.5
    assert relevance("the whales", "the fox") == 0.0
