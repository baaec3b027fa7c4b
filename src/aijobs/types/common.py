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
    pattern=r"^(https?://|data:image/|file_[0-9a-f]{24}$)",
    description="An http(s) URL, a data:image/... URL, or the id of an uploaded file (POST /v1/files).",
)


class Usage(BaseModel):
    """What a job consumed. ``units`` counts images or seconds of audio/video for media jobs, and the
    search units a reranker billed (``0`` for the token-billed ones).

    ``estimated``: some count is aijobs's own, the provider having reported none. ``cost_usd`` is
    ``None`` when unknown: no price, or an estimate with nothing to count (never a silent ``0``).
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    units: float = 0.0
    estimated: bool = False
    cost_usd: float | None = None


@dataclass(frozen=True, slots=True)
class RemoteFile:
    """One media output the worker downloads (streamed) from the provider into the BlobStore.

    ``headers`` carry what the download needs (Veo's files need our key); they are used for the one
    request and never stored. ``content_type``/``extension`` left ``None`` come from the response.
    """

    url: str
    content_type: str | None = None
    extension: str | None = None
    width: int | None = None
    height: int | None = None
    duration_s: float | None = None
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Media:
    """One media output as an adapter produced it, before it is copied into the BlobStore."""

    data: bytes
    content_type: str
    extension: str
    width: int | None = None
    height: int | None = None
    duration_s: float | None = None
