"""``POST /v1/embeddings`` (OpenAI's shape, float or base64) and ``POST /v1/rerank`` (Cohere's and
Jina's shape, which most rerank clients send)."""

from __future__ import annotations

import base64
import struct
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import Field, field_validator

from aijobs.api.deps import Services, services, tenant
from aijobs.api.openai.wire import OpenAIRequest, answer, failed, job_headers, metadata, parse, parse_fields
from aijobs.calls import Call
from aijobs.types.embed import EmbedInput, EmbedResult
from aijobs.types.rerank import RerankInput, RerankResult

router = APIRouter(tags=["openai"])
Svc = Annotated[Services, Depends(services)]
Tenant = Annotated[str, Depends(tenant)]


class EmbeddingsRequest(OpenAIRequest):
    model: str = Field(min_length=1, max_length=256)
    input: Any
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1, le=8_192)

    @field_validator("input")
    @classmethod
    def _text_only(cls, v: Any) -> Any:
        if isinstance(v, list) and v and not all(isinstance(item, str) for item in v):
            raise ValueError("only text is embedded here: send a string or a list of strings, not token ids")
        return v


class RerankRequest(OpenAIRequest):
    model: str = Field(min_length=1, max_length=256)
    query: str
    documents: list[str | dict[str, Any]] = Field(min_length=1)
    top_n: int | None = None
    return_documents: bool = False

    def texts(self) -> list[str]:
        """Documents as text: Cohere's and Jina's clients may send ``{"text": ...}`` objects."""
        return [d if isinstance(d, str) else str(d.get("text", "")) for d in self.documents]


async def _run(
    svc: Services, owner: str, model: str, job_type: str, request: Any, meta: dict[str, str]
) -> Call:
    feature = svc.catalog.feature(model, job_type)
    job = svc.calls.new_job(owner, feature, request, meta)
    return await svc.calls.run(job, feature, request)


@router.post("/v1/embeddings", summary="OpenAI-compatible embeddings (float or base64)")
async def embeddings(request: Request, svc: Svc, owner: Tenant) -> Response:
    body = parse(EmbeddingsRequest, await request.body())
    embed = parse_fields(EmbedInput, {"input": body.input, "dimensions": body.dimensions})
    call = await _run(svc, owner, body.model, "embed", embed, metadata(body.user))
    if call.error is not None:
        return failed(call)
    result = call.outcomes[0].result
    assert isinstance(result, EmbedResult)
    encode = _base64 if body.encoding_format == "base64" else list
    data = [
        {"object": "embedding", "index": i, "embedding": encode(vector)}
        for i, vector in enumerate(result.embeddings)
    ]
    usage = call.job.usage or {}
    tokens = int(usage.get("input_tokens") or 0)
    payload = {
        "object": "list", "data": data, "model": (call.job.route or {}).get("model", ""),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }  # fmt: skip
    return answer(payload, job_headers(call.job))


def _base64(vector: list[float]) -> str:
    """Little-endian float32s, base64: what OpenAI sends (and its SDK asks for by default)."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


@router.post("/v1/rerank", summary="Rerank documents by relevance (Cohere/Jina shape)")
async def rerank(request: Request, svc: Svc, owner: Tenant) -> Response:
    body = parse(RerankRequest, await request.body())
    texts = body.texts()
    ranked = parse_fields(RerankInput, {"query": body.query, "documents": texts, "top_n": body.top_n})
    call = await _run(svc, owner, body.model, "rerank", ranked, metadata(body.user))
    if call.error is not None:
        return failed(call)
    result = call.outcomes[0].result
    assert isinstance(result, RerankResult)
    hits = []
    for hit in result.results:
        item: dict[str, Any] = {"index": hit.index, "relevance_score": hit.relevance_score}
        if body.return_documents:
            item["document"] = {"text": texts[hit.index]}
        hits.append(item)
    tokens = int((call.job.usage or {}).get("input_tokens") or 0)
    payload = {
        "id": call.job.id, "object": "list", "model": (call.job.route or {}).get("model", ""),
        "results": hits, "usage": {"total_tokens": tokens}, "meta": {"billed_units": {"search_units": 1}},
    }  # fmt: skip
    return answer(payload, job_headers(call.job))
