"""The ``embed`` job type: texts in, one vector per text out."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, field_validator

from aijobs.types.common import Strict, Usage

MAX_INPUTS = 2_048
MAX_INPUT_CHARS = 32_000


class EmbedInput(Strict):
    input: str | list[str] = Field(description="One text or a list of texts.")
    dimensions: int | None = Field(default=None, ge=1, le=8_192)

    @field_validator("input")
    @classmethod
    def _limits(cls, v: str | list[str]) -> str | list[str]:
        texts = [v] if isinstance(v, str) else v
        if not 1 <= len(texts) <= MAX_INPUTS:
            raise ValueError(f"must hold between 1 and {MAX_INPUTS} texts")
        for i, text in enumerate(texts):
            if not text:
                raise ValueError(f"text {i} is empty")
            if len(text) > MAX_INPUT_CHARS:
                raise ValueError(f"text {i} is longer than {MAX_INPUT_CHARS} characters")
        return v

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class EmbedResult(BaseModel):
    embeddings: list[list[float]]
    model: str = ""
    usage: Usage = Field(default_factory=Usage)

    def output(self) -> dict[str, Any]:
        """The job's ``output`` object."""
        return {
            "embeddings": self.embeddings,
            "dimensions": len(self.embeddings[0]) if self.embeddings else 0,
        }
