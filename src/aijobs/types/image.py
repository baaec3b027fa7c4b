"""The ``image`` job type: a prompt (and optionally an image to edit) in, images out."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from aijobs.types.common import MAX_PROMPT_CHARS, ImageRef, Strict

MAX_IMAGES = 10
MIN_SIDE_PX, MAX_SIDE_PX = 64, 4_096
_SIZE = re.compile(r"[0-9]{1,5}x[0-9]{1,5}")  # ASCII digits only: int() would accept any script's


class ImageInput(Strict):
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    n: int = Field(default=1, ge=1, le=MAX_IMAGES)
    size: str = Field(default="1024x1024", max_length=11, description="WIDTHxHEIGHT in px, e.g. 1024x1024.")
    output_format: Literal["png", "jpeg", "webp"] = "png"
    image: str | None = ImageRef

    @field_validator("size")
    @classmethod
    def _side_limits(cls, v: str) -> str:
        if not _SIZE.fullmatch(v):
            raise ValueError("must be WIDTHxHEIGHT in pixels, e.g. 1024x1024")
        for side in v.split("x"):
            if not MIN_SIDE_PX <= int(side) <= MAX_SIDE_PX:
                raise ValueError(f"each side must be between {MIN_SIDE_PX} and {MAX_SIDE_PX} px")
        return v

    def dimensions(self) -> tuple[int, int]:
        width, height = self.size.split("x")
        return int(width), int(height)
