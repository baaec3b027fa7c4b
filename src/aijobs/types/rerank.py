"""The ``rerank`` job type: a query and documents in, documents ordered by relevance out."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, ValidationInfo, field_validator

from aijobs.types.common import Strict, Usage

MAX_DOCUMENTS = 1_000
MAX_DOCUMENT_CHARS = 32_000


class RerankInput(Strict):
    query: str = Field(min_length=1, max_length=8_000)
    documents: list[str] = Field(min_length=1, max_length=MAX_DOCUMENTS)
    top_n: int | None = Field(default=None, ge=1, le=MAX_DOCUMENTS)

    @field_validator("documents")
    @classmethod
    def _document_limits(cls, v: list[str]) -> list[str]:
        for i, doc in enumerate(v):
            if len(doc) > MAX_DOCUMENT_CHARS:
                raise ValueError(f"document {i} is longer than {MAX_DOCUMENT_CHARS} characters")
        return v

    @field_validator("top_n")
    @classmethod
    def _top_n_fits(cls, v: int | None, info: ValidationInfo) -> int | None:
        documents = info.data.get("documents")
        if v is not None and documents is not None and v > len(documents):
            raise ValueError(f"exceeds the number of documents ({len(documents)})")
        return v


class RerankHit(BaseModel):
    index: int
    relevance_score: float


class RerankResult(BaseModel):
    results: list[RerankHit]
    model: str = ""
    usage: Usage = Field(default_factory=Usage)

    def output(self) -> dict[str, Any]:
        """The job's ``output`` object."""
        return {"results": [hit.model_dump() for hit in self.results]}
