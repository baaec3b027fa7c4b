"""``POST /v1/images/generations`` and ``POST /v1/audio/speech``: OpenAI's media calls as media jobs.

Unlike chat, a media call goes through the ``media`` lane and this request waits for its job: media
providers work in long-running tasks that a worker submits, polls, copies into the BlobStore and
recovers after a crash, and a queue hop is nothing beside seconds of rendering. The answer is the
job's result: signed URLs or base64 images, or the audio itself.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import Field

from aijobs.api import bodies
from aijobs.api.deps import Services, services, tenant
from aijobs.api.errors import error_response, openai_status
from aijobs.api.jobs import wait_for_end
from aijobs.api.openai.wire import OpenAIRequest, answer, job_headers, metadata, parse, parse_fields
from aijobs.errors import DeadlineExceeded, InvalidRequest
from aijobs.jobs import Job, JobStatus
from aijobs.queue import delivery
from aijobs.routing.policy import Feature
from aijobs.types.image import ImageInput
from aijobs.types.speech import SpeechInput
from aijobs.views import job_view

_OUTPUT = "the job's output"
router = APIRouter(tags=["openai"])
Svc = Annotated[Services, Depends(services)]
Tenant = Annotated[str, Depends(tenant)]
#: A media call waits at most this long for its job (the OpenAI SDK's own timeout is 600 s).
MAX_WAIT_S = 590.0
_CONTENT_TYPES = {
    "mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac", "flac": "audio/flac", "wav": "audio/wav",
    "pcm": "audio/pcm",
}  # fmt: skip


class ImagesRequest(OpenAIRequest):
    """OpenAI's image request. ``quality`` and ``style`` are accepted for compatibility; features
    choose the model, and with it the look."""

    prompt: str
    model: str | None = Field(default=None, min_length=1, max_length=256)
    n: int = 1
    size: str | None = None
    response_format: Literal["url", "b64_json"] = "url"
    output_format: Literal["png", "jpeg", "webp"] | None = None
    quality: str | None = Field(default=None, max_length=32)
    style: str | None = Field(default=None, max_length=32)


class SpeechRequest(OpenAIRequest):
    model: str = Field(min_length=1, max_length=256)
    input: str
    voice: str
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = "mp3"
    speed: float = 1.0


def _feature(svc: Services, model: str | None, job_type: str) -> Feature:
    if model is None:
        return svc.routing.feature_for(job_type, None)
    feature = svc.catalog.feature(model, job_type)
    if svc.routing.features.get(feature.name) is not feature:
        raise InvalidRequest(
            f"model: {model!r} is a provider:model target; {job_type} calls run as jobs, so name a feature "
            "or an alias of one",
            param="model",
        )
    return feature


async def _finished(svc: Services, owner: str, feature: Feature, job_input: Any, meta: dict[str, str]) -> Job:
    """Submit the job on its lane and wait for it to end (its feature's deadline bounds the wait)."""
    created = await svc.store.create(
        tenant=owner, type=feature.type, feature=feature.name, lane=feature.lane,
        input=job_input.model_dump(mode="json", by_alias=True, exclude_none=True), metadata=meta,
        deliver=delivery,
    )  # fmt: skip
    deadline_s = feature.deadline_s or svc.routing.config.lane(feature.lane).job_timeout_s
    return await wait_for_end(svc, created.job, min(deadline_s + 5.0, MAX_WAIT_S))


def _unfinished(job: Job) -> Response | None:
    """The error answer for a job that failed or is still running; ``None`` when it succeeded."""
    if job.status is JobStatus.SUCCEEDED:
        return None
    if job.error is not None:
        code, message = job.error["code"], job.error["message"]
    else:
        code = DeadlineExceeded.code
        message = f"job {job.id} is still {job.status.value}; fetch it at GET /v1/jobs/{job.id}"
    response = error_response(openai_status(code), code, message)
    response.headers.update(job_headers(job))
    return response


@router.post("/v1/images/generations", summary="OpenAI-compatible image generation (url or b64_json)")
async def images(request: Request, svc: Svc, owner: Tenant) -> Response:
    body = parse(ImagesRequest, await request.body())
    fields: dict[str, Any] = {"prompt": body.prompt, "n": body.n}
    if body.size not in (None, "auto"):
        fields["size"] = body.size
    if body.output_format is not None:
        fields["output_format"] = body.output_format
    job_input = parse_fields(ImageInput, fields)
    job = await _finished(svc, owner, _feature(svc, body.model, "image"), job_input, metadata(body.user))
    if (error := _unfinished(job)) is not None:
        return error
    images = (job.output or {}).get("images", [])
    if body.response_format == "b64_json":
        data = [
            {"b64_json": base64.b64encode(await bodies.whole(svc.blobs, image["key"], _OUTPUT)).decode()}
            for image in images
        ]
    else:
        view = await job_view(job, svc.blobs, svc.settings.blob_url_ttl_s)
        data = [{"url": image["url"]} for image in view["output"]["images"]]
    return answer({"created": int(job.created_at), "data": data}, job_headers(job))


@router.post("/v1/audio/speech", summary="OpenAI-compatible text to speech (the audio is the body)")
async def speech(request: Request, svc: Svc, owner: Tenant) -> Response:
    body = parse(SpeechRequest, await request.body())
    fields = {"text": body.input, "voice": body.voice, "format": body.response_format, "speed": body.speed}
    job_input = parse_fields(SpeechInput, fields, {"text": "input", "format": "response_format"})
    job = await _finished(svc, owner, _feature(svc, body.model, "speech"), job_input, metadata(body.user))
    if (error := _unfinished(job)) is not None:
        return error
    audio = (job.output or {})["audio"]
    headers = job_headers(job) | {"content-length": str(audio["bytes"])}
    content_type = audio.get("content_type") or _CONTENT_TYPES[body.response_format]
    return await bodies.streamed(svc.blobs, audio["key"], _OUTPUT, content_type, headers)
