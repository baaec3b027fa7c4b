"""Cohere's v2 embeddings (``POST {base_url}/embed``); its rerank lives with the other rerankers."""

from __future__ import annotations

from typing import Any, ClassVar

import orjson
from pydantic import BaseModel

from aijobs.errors import ProviderBadResponse
from aijobs.providers import http
from aijobs.providers.base import NoOptions, ProviderContext, embed_in_batches
from aijobs.providers.presets import preset_for
from aijobs.providers.rerank import CohereRerank
from aijobs.types.embed import EmbedInput, EmbedResult

BATCH_LIMIT = 96  # texts per embed call


class CohereEmbed:
    """Documents are embedded as ``search_document``; a query-side kind can be a model option later."""

    Options: ClassVar[type[BaseModel]] = NoOptions

    def __init__(self, context: ProviderContext) -> None:
        self.context = context
        preset = preset_for(context.config.preset).base_url if context.config.preset else None
        self.url = (context.config.base_url or preset or CohereRerank.default_base_url).rstrip("/") + "/embed"
        self.headers = http.json_headers(context)
        self.timeouts = http.timeouts_for(context)

    async def run(self, model: str, request: EmbedInput) -> EmbedResult:
        vectors, usage = await embed_in_batches(
            request.texts(), BATCH_LIMIT, lambda batch: self._embed(model, batch, request.dimensions)
        )
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
