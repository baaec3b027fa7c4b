"""Job types: the request (``POST /v1/jobs`` body) discriminated on ``type``, and each type's input.

The adapters' result models live beside each input (``ChatResult``, ``EmbedResult``, …).
"""

from __future__ import annotations

from typing import Annotated, Literal, TypeAlias

from pydantic import Field, field_validator

from aijobs.types.chat import ChatInput
from aijobs.types.common import Strict
from aijobs.types.embed import EmbedInput
from aijobs.types.image import ImageInput
from aijobs.types.rerank import RerankInput
from aijobs.types.speech import SpeechInput
from aijobs.types.video import VideoInput

JobType = Literal["chat", "embed", "rerank", "image", "speech", "video"]
JOB_TYPES: tuple[JobType, ...] = ("chat", "embed", "rerank", "image", "speech", "video")
MEDIA_TYPES: frozenset[str] = frozenset({"image", "speech", "video"})

FEATURE_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
MAX_METADATA_KEYS = 16
RESERVED_METADATA = frozenset({"batch_id"})


WebhookEvent = Literal["job.running", "job.succeeded", "job.failed", "job.canceled"]
WEBHOOK_EVENTS: tuple[WebhookEvent, ...] = ("job.running", "job.succeeded", "job.failed", "job.canceled")
BatchEvent = Literal["batch.completed", "batch.failed", "batch.expired", "batch.cancelled"]
WEBHOOK_URL_PATTERN = r"^https?://[^\s\x00-\x1f\x7f]+$"


class _Destination(Strict):
    url: str = Field(min_length=8, max_length=2048, pattern=WEBHOOK_URL_PATTERN)

    @field_validator("events", check_fields=False)
    @classmethod
    def _distinct(cls, events: list[str]) -> list[str]:
        return list(dict.fromkeys(events))


class WebhookSpec(_Destination):
    """Where to POST this job's events (signed with the tenant's job-webhook secret)."""

    events: list[WebhookEvent] = Field(
        default_factory=lambda: list(WEBHOOK_EVENTS),
        min_length=1,
        description="The events to send; all four when left out.",
    )


class EndpointSpec(_Destination):
    """A webhook endpoint: it receives the tenant's events, the four job events unless ``events``
    names others (a batch's endings)."""

    events: list[WebhookEvent | BatchEvent] = Field(
        default_factory=lambda: list[WebhookEvent | BatchEvent](WEBHOOK_EVENTS),
        min_length=1,
        description="The events to send; the four job events when left out.",
    )


class _JobRequest(Strict):
    feature: str | None = Field(default=None, pattern=FEATURE_PATTERN)
    metadata: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]] = Field(
        default_factory=dict, max_length=MAX_METADATA_KEYS
    )
    webhook: WebhookSpec | None = None

    @field_validator("metadata")
    @classmethod
    def _not_reserved(cls, metadata: dict[str, str]) -> dict[str, str]:
        return checked_metadata(metadata)


def checked_metadata(metadata: dict[str, str]) -> dict[str, str]:
    """A caller's metadata, refused if it sets a key the service sets (a batch line's ``batch_id``
    is what the ledger counts the line under)."""
    if reserved := sorted(RESERVED_METADATA & set(metadata)):
        raise ValueError(f"{reserved[0]!r} is set by aijobs itself (batch lines carry it)")
    return metadata


class ChatJob(_JobRequest):
    type: Literal["chat"]
    input: ChatInput


class EmbedJob(_JobRequest):
    type: Literal["embed"]
    input: EmbedInput


class RerankJob(_JobRequest):
    type: Literal["rerank"]
    input: RerankInput


class ImageJob(_JobRequest):
    type: Literal["image"]
    input: ImageInput


class SpeechJob(_JobRequest):
    type: Literal["speech"]
    input: SpeechInput


class VideoJob(_JobRequest):
    type: Literal["video"]
    input: VideoInput


JobRequest: TypeAlias = Annotated[
    ChatJob | EmbedJob | RerankJob | ImageJob | SpeechJob | VideoJob, Field(discriminator="type")
]
JobInput: TypeAlias = ChatInput | EmbedInput | RerankInput | ImageInput | SpeechInput | VideoInput

#: job type → its input model, for re-validating a stored input in the worker.
INPUT_MODELS: dict[str, type[JobInput]] = {
    "chat": ChatInput,
    "embed": EmbedInput,
    "rerank": RerankInput,
    "image": ImageInput,
    "speech": SpeechInput,
    "video": VideoInput,
}
