"""The ``video`` job type: a prompt (and optionally a first frame) in, one video out."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from aijobs.types.common import MAX_PROMPT_CHARS, ImageRef, Strict

AspectRatio = Literal["16:9", "9:16", "1:1", "4:3", "3:4", "21:9"]
Resolution = Literal["480p", "720p", "1080p"]

_SHORT_SIDE_PX = {"480p": 480, "720p": 720, "1080p": 1080}


class VideoInput(Strict):
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    duration_s: int = Field(default=5, ge=1, le=60)
    aspect_ratio: AspectRatio = "16:9"
    resolution: Resolution = "720p"
    image: str | None = ImageRef

    def dimensions(self) -> tuple[int, int]:
        """Width and height in px for the aspect ratio at this resolution (even numbers)."""
        w_ratio, h_ratio = (int(x) for x in self.aspect_ratio.split(":"))
        short = _SHORT_SIDE_PX[self.resolution]
        if w_ratio >= h_ratio:
            return (short * w_ratio // h_ratio) // 2 * 2, short
        return short, (short * h_ratio // w_ratio) // 2 * 2
