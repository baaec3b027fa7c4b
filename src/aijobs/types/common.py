"""Pieces every job type shares: the strict base model, usage, and a media item."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

MAX_PROMPT_CHARS = 4_000
MAX_URL_CHARS = 16 * 1024 * 1024  # a data: URL carrying an image counts here


class Strict(BaseModel):
    """Unknown fields are an error: a typo in a field name must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


ImageRef = Field(
    default=None,
    min_length=1,
    max_length=MAX_URL_CHARS,
    pattern=r"^(https?://|data:image/)",
    description="An http(s) URL or a data:image/... URL.",
)


class Usage(BaseModel):
    """What a job consumed. ``units`` counts images or seconds of audio/video for media jobs."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    units: float = 0.0
    estimated: bool = False
    cost_usd: float | None = None


@dataclass(frozen=True, slots=True)
class Media:
    """One media output as an adapter produced it, before it is copied into the BlobStore."""

    data: bytes
    content_type: str
    extension: str
    width: int | None = None
    height: int | None = None
    duration_s: float | None = None
