"""Rerank adapters: the ``cohere`` kind (Cohere v2 and the vendors that copy its shape: SiliconFlow,
Volcengine Ark, Baidu Qianfan), ``jina``, ``voyage`` and ``dashscope`` (Alibaba's gte-rerank).

They differ only in where the request goes, how it is shaped and where the scores come back; each
class says exactly that and nothing else.

Usage is what the provider billed: ``units`` are search units where it reports them (Cohere; ``0`` is
``0``), ``input_tokens`` the tokens it counted (the token-billed ones report no search units, so
theirs are ``0``). An answer that reports neither is estimated, both counts, and marked so.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import orjson
from pydantic import BaseModel

from aijobs.errors import ProviderBadResponse
from aijobs.providers import http
from aijobs.providers.base import NoOptions, ProviderContext
from aijobs.providers.presets import preset_for
from aijobs.tokens import count_tokens
from aijobs.types.common import Usage
from aijobs.types.rerank import RerankHit, RerankInput, RerankResult

#: Cohere's search unit: one query over up to 100 documents, a document longer than 500 tokens (with
#: the query) counting once per 500.
SEARCH_DOCUMENTS = 100
CHUNK_TOKENS = 500


def estimated_usage(request: RerankInput) -> Usage:
    """The tokens (the query once per document, plus the documents) and search units of ``request``,
    for an answer that reports no usage."""
    query = count_tokens(request.query)
    documents = [count_tokens(document) for document in request.documents]
    chunks = sum(max(1, math.ceil((query + tokens) / CHUNK_TOKENS)) for tokens in documents)
    return Usage(
        input_tokens=query * len(documents) + sum(documents),
        units=float(math.ceil(chunks / SEARCH_DOCUMENTS)),
        estimated=True,
    )


class _Rerank:
    Options: ClassVar[type[BaseModel]] = NoOptions
    default_base_url: ClassVar[str]
    path: ClassVar[str] = "/rerank"

    def __init__(self, context: ProviderContext) -> None:
        self.context = context
        base = context.config.base_url or self._preset_base_url() or self.default_base_url
        self.url = base.rstrip("/") + self.path
        self.headers = http.json_headers(context)
        self.timeouts = http.timeouts_for(context)

    def _preset_base_url(self) -> str | None:
        return None

    async def run(self, model: str, request: RerankInput) -> RerankResult:
        data = await http.post_json(
            self.context, self.url, self.body(model, request), model=model, headers=self.headers,
            timeouts=self.timeouts,
        )  # fmt: skip
        try:
            hits = [
                RerankHit(index=int(r["index"]), relevance_score=float(r["relevance_score"]))
                for r in self.rows(data)
            ]
            usage = self.usage(data if isinstance(data, dict) else {}, request)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ProviderBadResponse(
                f"{self.context.name} {model}: the answer has no ranked results", provider=self.context.name,
                model=model, status=200, body=orjson.dumps(data).decode(),
            ) from None  # fmt: skip
        if any(not 0 <= hit.index < len(request.documents) for hit in hits):
            raise ProviderBadResponse(
                f"{self.context.name} {model}: a result points past the documents",
                provider=self.context.name, model=model, status=200, body=orjson.dumps(data).decode(),
            )  # fmt: skip
        hits.sort(key=lambda hit: -hit.relevance_score)
        if request.top_n is not None:
            hits = hits[: request.top_n]
        return RerankResult(results=hits, model=model, usage=usage)

    def body(self, model: str, request: RerankInput) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "query": request.query, "documents": request.documents}
        if request.top_n is not None:
            body["top_n"] = request.top_n
        return body

    def rows(self, data: Any) -> list[Any]:
        rows: list[Any] = data["results"]
        return rows

    def usage(self, data: Any, request: RerankInput) -> Usage:
        tokens = http.as_dict(data.get("usage")).get("total_tokens")
        if tokens is None:
            return estimated_usage(request)
        return Usage(input_tokens=int(tokens))  # billed per token: no search units


class CohereRerank(_Rerank):
    """``POST {base_url}/rerank``: Cohere v2 (``https://api.cohere.com/v2``), and with a preset or base
    URL, SiliconFlow (``…/v1``), Ark (``…/api/v3``) and Qianfan (``…/v2``), which copy its shape."""

    default_base_url = "https://api.cohere.com/v2"

    def _preset_base_url(self) -> str | None:
        return preset_for(self.context.config.preset).base_url if self.context.config.preset else None

    def usage(self, data: Any, request: RerankInput) -> Usage:
        meta = http.as_dict(data.get("meta"))
        billed, counted = http.as_dict(meta.get("billed_units")), http.as_dict(meta.get("tokens"))
        units = billed.get("search_units")  # Cohere's; 0 is 0 (nothing billed), never 1
        tokens = counted.get("input_tokens", billed.get("input_tokens"))  # SiliconFlow's, Ark's
        if units is None and tokens is None:
            return super().usage(data, request)
        return Usage(input_tokens=int(tokens or 0), units=float(units or 0))


class JinaRerank(_Rerank):
    """``POST https://api.jina.ai/v1/rerank``."""

    default_base_url = "https://api.jina.ai/v1"

    def body(self, model: str, request: RerankInput) -> dict[str, Any]:
        return {**super().body(model, request), "return_documents": False}


class VoyageRerank(_Rerank):
    """``POST https://api.voyageai.com/v1/rerank``: ``top_k`` rather than ``top_n``, ``data`` rather than
    ``results``."""

    default_base_url = "https://api.voyageai.com/v1"

    def body(self, model: str, request: RerankInput) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "query": request.query, "documents": request.documents}
        if request.top_n is not None:
            body["top_k"] = request.top_n
        body["return_documents"] = False
        return body

    def rows(self, data: Any) -> list[Any]:
        rows: list[Any] = data["data"]
        return rows


class DashScopeRerank(_Rerank):
    """``POST https://dashscope.aliyuncs.com/api/v1/services/rerank/text-rerank/text-rerank``:
    ``input`` and ``parameters`` in, ``output.results`` out."""

    default_base_url = "https://dashscope.aliyuncs.com/api/v1"
    path = "/services/rerank/text-rerank/text-rerank"

    def body(self, model: str, request: RerankInput) -> dict[str, Any]:
        parameters: dict[str, Any] = {"return_documents": False}
        if request.top_n is not None:
            parameters["top_n"] = request.top_n
        return {
            "model": model,
            "input": {"query": request.query, "documents": request.documents},
            "parameters": parameters,
        }

    def rows(self, data: Any) -> list[Any]:
        rows: list[Any] = data["output"]["results"]
        return rows
