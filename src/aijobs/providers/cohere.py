"""Cohere's v2 embeddings (``POST {base_url}/embed``); its rerank lives with the other rerankers."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import orjson
from pydantic import BaseModel

from aijobs.errors import ProviderBadResponse
from aijobs.providers import http
from aijobs.providers.base import NoOptions, ProviderContext
from aijobs.providers.presets import preset_for
from aijobs.providers.rerank import CohereRerank
from aijobs.tokens import count_tokens
from aijobs.types.common import Usage
from aijobs.types.embed import EmbedInput, EmbedResult

BATCH_LIMIT = 96  # texts per embed call


class CohereEmbed:
    """Documents are embedded as ``search_document``; a query-side kind can be a model option later."""

    Options: ClassVar[type[BaseModel]] = NoOptions

    def __init__(self, context: ProviderContext) -> None:
        self.context = context
        preset = preset_for(context.config.preset).base_url if context.config.preset else None
        self.url = (context.config.base_url or preset or CohereRerank.default_base_url).rstrip("/") + "/embed"
        self.headers = {"Content-Type": "application/json"}
        if context.api_key:
            self.headers["Authorization"] = f"Bearer {context.api_key}"
        self.timeouts = http.timeout(context.config.connect_timeout_s, context.config.read_timeout_s)

    async def run(self, model: str, request: EmbedInput) -> EmbedResult:
        texts = request.texts()
        # Cohere takes at most 96 texts a call; larger inputs go as concurrent batches.
        batches = [texts[i : i + BATCH_LIMIT] for i in range(0, len(texts), BATCH_LIMIT)]
        answers = await asyncio.gather(*(self._embed(model, batch, request.dimensions) for batch in batches))
        vectors = [vector for batch_vectors, _ in answers for vector in batch_vectors]
        billed = [tokens for _, tokens in answers]
        if all(tokens is not None for tokens in billed):
            usage = Usage(input_tokens=sum(int(t or 0) for t in billed))
        else:
            usage = Usage(input_tokens=sum(count_tokens(t) for t in texts), estimated=True)
        return EmbedResult(embeddings=vectors, model=model, usage=usage)

    async def _embed(
        self, model: str, texts: list[str], dimensions: int | None
    ) -> tuple[list[list[float]], Any]:
        body: dict[str, Any] = {
            "model": model, "texts": texts, "input_type": "search_document", "embedding_types": ["float"],
        }  # fmt: skip
        if dimensions is not None:
            body["output_dimension"] = dimensions
        data = await http.post_json(
            self.context, self.url, body, model=model, headers=self.headers, timeouts=self.timeouts
        )
        try:
            vectors = [[float(x) for x in row] for row in data["embeddings"]["float"]]
        except (KeyError, TypeError, ValueError):
            vectors = []
        if len(vectors) != len(texts):
            raise ProviderBadResponse(
                f"{self.context.name} {model}: {len(vectors)} embeddings for {len(texts)} inputs",
                provider=self.context.name, model=model, status=200, body=orjson.dumps(data).decode(),
            )  # fmt: skip
        billed = http.as_dict(http.as_dict(http.as_dict(data).get("meta")).get("billed_units"))
        return vectors, billed.get("input_tokens")
