"""TEST FAKE: fal's queue API (mounted at ``/fal``); not a provider, never used in production.

Speaks fal's documented queue wire format over the shared render farm:

- ``POST /{model_id}`` (``fal-ai/flux/dev``; header ``Authorization: Key …``) → ``{request_id,
  response_url, status_url, cancel_url, queue_position}``, the URLs absolute on this server and naming
  the model's app (``/{owner}/{app}/requests/{id}``), not its full path, as fal does;
- ``GET …/requests/{id}/status[?logs=1]`` → 202 ``IN_QUEUE`` (``queue_position``) / 202 ``IN_PROGRESS``
  (``logs``) / 200 ``COMPLETED`` (``metrics``);
- ``GET …/requests/{id}`` → the model's output: images ``{images: [{url, width, height,
  content_type}], seed, has_nsfw_concepts, prompt, timings}``, video ``{video: {url, content_type,
  file_name, file_size}}``; before completion 400; a failed request 500 with a model error
  ``{"detail": [{loc, msg, type}]}``; a moderated video 422 ``content_policy_violation``, a moderated
  image 200 with ``has_nsfw_concepts: [true, …]`` (fal blacks the images out);
- ``PUT …/requests/{id}/cancel`` → 202 ``{"status": "CANCELLATION_REQUESTED"}`` | 400
  ``{"status": "ALREADY_COMPLETED"}`` | 404 ``{"status": "NOT_FOUND"}``.

Unknown or expired requests answer 404 ``{"detail": "Request not found"}``; a missing key 401; injected
faults their status with ``{"detail": "..."}`` (and ``Retry-After`` when given).

Assumptions: a model id containing ``video`` is a video model, others image models; ``image-to-video``
and ``image-to-image`` models require ``image_url``; unknown input fields are refused with 422 (real
models may ignore them); a canceled request reports ``COMPLETED`` and its result answers 400
``{"detail": "Request was cancelled", "error_type": "request_cancelled"}`` (fal documents no shape for it).
"""

from __future__ import annotations

import struct
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from tests.fakes.media.farm import FakeTask, Farm, json_response, output_bytes

PROVIDER = "fal"
IMAGE_FIELDS = frozenset(
    {"prompt", "image_size", "num_images", "output_format", "image_url", "seed", "num_inference_steps"}
    | {"guidance_scale", "enable_safety_checker", "sync_mode", "strength", "acceleration"}
)
VIDEO_FIELDS = frozenset(
    {"prompt", "duration", "aspect_ratio", "image_url", "negative_prompt", "cfg_scale", "tail_image_url"}
)
IMAGE_SIZES = frozenset(
    {"square_hd", "square", "portrait_4_3", "portrait_16_9", "landscape_4_3", "landscape_16_9"}
)
MAX_IMAGES, MAX_SIDE_PX = 4, 14_142
CHOICES = {"output_format": ("jpeg", "png"), "duration": ("5", "10"), "aspect_ratio": ("16:9", "9:16", "1:1")}


class FalError(Exception):
    """An answer in one of fal's error shapes."""

    def __init__(self, status: int, body: dict[str, Any], retry_after: float | None = None) -> None:
        super().__init__(str(body))
        self.status, self.body, self.retry_after = status, body, retry_after

    def response(self) -> Response:
        headers = {"Retry-After": f"{self.retry_after:g}"} if self.retry_after is not None else None
        return json_response(self.body, self.status, headers)


def invalid(field: str, message: str, kind: str = "value_error") -> FalError:
    """A model's 422 for a bad input field."""
    return FalError(422, {"detail": [{"loc": ["body", field], "msg": message, "type": kind}]})


def server_root(request: Request) -> str:
    """The server's own root URL (where ``/files`` lives), whatever Mount did to ``root_path``."""
    return str(request.base_url).rstrip("/")


def mount_root(request: Request) -> str:
    """This fake's root URL: the server root plus the Mount's prefix (``/fal``)."""
    mounted = str(request.scope.get("root_path", ""))[len(str(request.scope.get("app_root_path", ""))) :]
    return server_root(request) + mounted


def is_video(model: str) -> bool:
    return "video" in model


def check_input(model: str, body: Any) -> str:
    """The prompt of a valid model input; else the 422 the model answers."""
    if not isinstance(body, dict):
        raise invalid("body", "Input should be a valid dictionary", "dict_type")
    unknown = sorted(set(body) - (VIDEO_FIELDS if is_video(model) else IMAGE_FIELDS))
    if unknown:
        raise invalid(unknown[0], "Extra inputs are not permitted", "extra_forbidden")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise invalid("prompt", "Field required", "missing")
    for name, values in CHOICES.items():
        if name in body and body[name] not in values:
            raise invalid(name, f"Input should be one of {', '.join(values)}", "literal_error")
    image_url = body.get("image_url")
    if ("image-to-" in model or image_url is not None) and not (
        isinstance(image_url, str) and image_url.startswith(("http://", "https://", "data:image/"))
    ):
        raise invalid("image_url", "Input should be a valid URL or data URI", "url_parsing")
    if not is_video(model):
        check_image_size(body.get("image_size", "landscape_4_3"))
        count = body.get("num_images", 1)
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_IMAGES:
            raise invalid("num_images", f"Input should be between 1 and {MAX_IMAGES}", "less_than_equal")
    return prompt


def check_image_size(size: Any) -> None:
    if isinstance(size, str) and size in IMAGE_SIZES:
        return
    if not isinstance(size, dict) or set(size) != {"width", "height"}:
        raise invalid(
            "image_size", "Input should be an image size name or {width, height}", "union_tag_invalid"
        )
    for side in ("width", "height"):
        value = size[side]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SIDE_PX:
            raise invalid("image_size", f"{side} should be an integer in 1..{MAX_SIDE_PX}", "int_type")


def app_of(model: str) -> str:
    """The app a model belongs to (``fal-ai/flux/dev`` → ``fal-ai/flux``): queue URLs name the app."""
    return "/".join(model.split("/")[:2])


def output_of(request: Request, task: FakeTask) -> dict[str, Any]:
    """A completed request's model output."""
    if is_video(task.model):
        video: dict[str, Any] = {"url": server_root(request) + task.file_path(0), "content_type": "video/mp4"}
        video |= {"file_name": "output.mp4", "file_size": len(output_bytes(task, 0))}
        return {"video": video}
    images = []
    for index in range(int(task.body.get("num_images", 1))):
        width, height = struct.unpack(">II", output_bytes(task, index)[16:24])  # the PNG's IHDR
        url = server_root(request) + task.file_path(index)
        images.append({"url": url, "width": width, "height": height, "content_type": "image/png"})
    flagged = task.phase() == "moderated"
    return {
        "images": images,
        "seed": 42,
        "has_nsfw_concepts": [flagged] * len(images),
        "prompt": task.prompt,
        "timings": {"inference": task.render_s},
    }


def routes(farm: Farm) -> list[BaseRoute]:
    """fal's queue endpoints over ``farm``."""

    async def guard(request: Request, step: str) -> Any:
        body = await farm.record(request, PROVIDER, step)
        fault = await farm.fault(PROVIDER, step)
        if fault is not None and fault.status is not None:
            raise FalError(fault.status, {"detail": f"injected fault {fault.status}"}, fault.retry_after)
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme != "Key" or not key.strip():
            raise FalError(401, {"detail": "Missing or invalid authorization: expected 'Key <key>'"})
        return body

    def find(request: Request, *, counting: bool = True) -> FakeTask:
        params = request.path_params
        request_id = params["request_id"]
        task = farm.find(request_id, PROVIDER) if counting else farm.tasks.get(request_id)
        app = f"{params['owner']}/{params['app']}"
        if (
            task is None
            or task.provider != PROVIDER
            or task.phase() == "expired"
            or app_of(task.model) != app
        ):
            raise FalError(404, {"detail": "Request not found"})
        return task

    def urls(request: Request, task: FakeTask) -> dict[str, str]:
        base = f"{mount_root(request)}/{app_of(task.model)}/requests/{task.id}"
        return {"response_url": base, "status_url": f"{base}/status", "cancel_url": f"{base}/cancel"}

    async def submit(request: Request) -> Response:
        model = request.path_params["model"].strip("/")
        try:
            body = await guard(request, "submit")
            if model.count("/") < 1:
                raise FalError(404, {"detail": f"Application '{model}' not found"})
            prompt = check_input(model, body)
        except FalError as exc:
            return exc.response()
        task = farm.create(PROVIDER, model, prompt, "video" if is_video(model) else "image", body)
        answer = {"request_id": task.id, **urls(request, task), "queue_position": 0}
        return await farm.answer(PROVIDER, "submit", json_response(answer))

    async def status(request: Request) -> Response:
        try:
            await guard(request, "poll")
            task = find(request)
        except FalError as exc:
            return exc.response()
        phase = task.phase()
        answer: dict[str, Any] = {"response_url": urls(request, task)["response_url"]}
        if request.query_params.get("logs") == "1":
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            answer["logs"] = [
                {"message": f"{phase} {task.progress():.0%}", "level": "INFO", "timestamp": stamp}
            ]
        if phase == "queued":
            return json_response({"status": "IN_QUEUE", "queue_position": 0, **answer}, 202)
        if phase == "running":
            return json_response({"status": "IN_PROGRESS", **answer}, 202)
        return json_response({"status": "COMPLETED", "metrics": {"inference_time": task.render_s}, **answer})

    async def result(request: Request) -> Response:
        try:
            await guard(request, "poll")
            task = find(request)
            phase = task.phase()
            if phase in ("queued", "running"):
                raise FalError(400, {"detail": "Request is still in progress"})
            if phase == "canceled":
                raise FalError(400, {"detail": "Request was cancelled", "error_type": "request_cancelled"})
            if phase == "failed":
                crashed = {"loc": ["body"], "msg": "Generation failed", "type": "internal_server_error"}
                raise FalError(500, {"detail": [crashed]})
            if phase == "moderated" and is_video(task.model):
                flagged = {"loc": ["body", "prompt"], "msg": "The content was flagged by a content checker."}
                flagged |= {"type": "content_policy_violation", "input": task.prompt}
                raise FalError(422, {"detail": [flagged]})
        except FalError as exc:
            return exc.response()
        return json_response(output_of(request, task))

    async def cancel(request: Request) -> Response:
        try:
            await guard(request, "cancel")
            task = find(request, counting=False)
        except FalError as exc:
            if exc.status == 404:
                return json_response({"status": "NOT_FOUND"}, 404)
            return exc.response()
        if task.phase() not in ("queued", "running"):
            return json_response({"status": "ALREADY_COMPLETED"}, 400)
        task.canceled = True
        return json_response({"status": "CANCELLATION_REQUESTED"}, 202)

    request_path = "/{owner:str}/{app:str}/requests/{request_id:str}"
    return [
        Route(f"{request_path}/status", status, methods=["GET"]),
        Route(f"{request_path}/cancel", cancel, methods=["PUT"]),
        Route(request_path, result, methods=["GET"]),
        Route("/{model:path}", submit, methods=["POST"]),
    ]
