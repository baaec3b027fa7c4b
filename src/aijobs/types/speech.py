"""The ``speech`` job type: text in, one audio file out."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from aijobs.types.common import Strict

MAX_SPEECH_CHARS = 4_096


class SpeechInput(Strict):
    text: str = Field(min_length=1, max_length=MAX_SPEECH_CHARS)
    voice: str = Field(default="alloy", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    format: Literal["wav", "mp3", "opus", "aac", "flac", "pcm"] = "wav"
    speed: float = Field(default=1.0, ge=0.25, le=4.0)
