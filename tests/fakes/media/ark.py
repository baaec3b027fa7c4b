"""TEST FAKE: Volcengine Ark's content-generation tasks, as Seedance video uses them (mounted under ``/ark``).

Ark's conventions, kept here: errors are an HTTP status with ``{"error": {"code", "message", "param",
"type"}}`` (400 InvalidParameter, 401 AuthenticationError, 403 AccessDenied, 404 NotFound or
InvalidEndpointOrModel.NotFound, 429 RateLimitExceeded, 500 InternalServiceError); a task id is
``cgt-…``; a failed task's record carries its own ``error`` (moderation:
``OutputVideoSensitiveContentDetected``); ``DELETE`` cancels a queued task, deletes a finished one's
record, and refuses a running (or already cancelled) one.

Choices where the docs are silent (unverified): refusing a DELETE answers 400 ``OperationDenied``; a
task Ark does not know answers 404 ``NotFound``; a generically failed task's code is
``InternalServiceError``. ``usage.completion_tokens`` (and ``total_tokens``, the same for video) is
counted as Seedance bills it: width * height * fps * seconds / 1024, from Seedance 1.0's pixel sizes
per resolution and ratio (:data:`SIZES`; ``adaptive`` counts as 16:9).

Fake limitations: ``return_last_frame`` is accepted but no last frame is served; unknown body fields
and content-item fields are refused (so a misspelt field fails loudly).
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from tests.fakes.media.farm import FakeTask, Farm, json_response

PROVIDER = "ark"
TASKS = "/api/v3/contents/generations/tasks"
ID_PREFIX = "cgt-"
MODEL = re.compile(r"^((doubao-)?seedance-[\w.-]+|ep-[\w-]+)$")
IMAGE_REF = re.compile(r"^(https?://|data:image/)")
RATIOS = frozenset({"16:9", "4:3", "1:1", "3:4", "9:16", "21:9", "adaptive"})
RESOLUTIONS = frozenset({"480p", "720p", "1080p"})
ROLES = frozenset({"first_frame", "last_frame", "reference_image"})
MIN_DURATION_S, MAX_DURATION_S = 2, 12
FPS = 24
#: Seedance 1.0's output sizes (width, height) by resolution and ratio.
SIZES = {
    "480p": {"16:9": (864, 480), "4:3": (736, 544), "1:1": (640, 640), "3:4": (544, 736),
             "9:16": (480, 864), "21:9": (960, 416)},
    "720p": {"16:9": (1248, 704), "4:3": (1120, 832), "1:1": (960, 960), "3:4": (832, 1120),
             "9:16": (704, 1248), "21:9": (1504, 640)},
    "1080p": {"16:9": (1920, 1088), "4:3": (1664, 1248), "1:1": (1440, 1440), "3:4": (1248, 1664),
              "9:16": (1088, 1920), "21:9": (2176, 928)},
}  # fmt: skip


def video_tokens(resolution: str, ratio: str, duration_s: int) -> int:
    """The tokens Seedance bills for a clip: its pixels over every frame, per 1024."""
    width, height = SIZES[resolution].get(ratio, SIZES[resolution]["16:9"])
    return width * height * FPS * duration_s // 1024


BOOLEAN_FIELDS = frozenset({"return_last_frame", "generate_audio", "draft", "camera_fixed", "watermark"})
OPTIONAL_FIELDS = BOOLEAN_FIELDS | {
    "callback_url", "service_tier", "execution_expires_after", "resolution", "ratio", "duration", "frames",
    "seed",
}  # fmt: skip
ERRORS = {
    400: ("InvalidParameter", "BadRequest"),
    401: ("AuthenticationError", "Unauthorized"),
    403: ("AccessDenied", "Forbidden"),
    404: ("NotFound", "NotFound"),
    429: ("RateLimitExceeded", "TooManyRequests"),
    500: ("InternalServiceError", "InternalServerError"),
}
FAILURES = {
    "failed": ("InternalServiceError", "The service encountered an unexpected internal error."),
    "moderated": (
        "OutputVideoSensitiveContentDetected",
        "The request failed because the output video may contain sensitive information.",
    ),
}
STATUS = {"queued": "queued", "running": "running", "succeeded": "succeeded", "canceled": "cancelled"}


class Invalid(ValueError):
    """A body Ark refuses with 400 InvalidParameter; ``param`` names the field."""

    def __init__(self, message: str, param: str = "") -> None:
        super().__init__(message)
        self.param = param


def error(status: int, message: str, param: str = "", headers: dict[str, str] | None = None) -> Response:
    """Ark's error answer for ``status``."""
    code, kind = ERRORS.get(status) or ERRORS[500 if status >= 500 else 400]
    return error_with(status, code, kind, message, param, headers)


def error_with(
    status: int, code: str, kind: str, message: str, param: str = "", headers: dict[str, str] | None = None
) -> Response:
    body = {"error": {"code": code, "message": message, "param": param, "type": kind}}
    return json_response(body, status, headers)


Handler = Callable[[Request, Any], Awaitable[Response]]


def routes(farm: Farm) -> list[BaseRoute]:
    """Ark's task endpoints, relative to the mount prefix."""

    def endpoint(step: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """Journal, injected fault, Bearer key and a 400 for a malformed body: shared by every route."""

        async def run(request: Request) -> Response:
            body = await farm.record(request, PROVIDER, step)
            fault = await farm.fault(PROVIDER, step)
            if fault is not None and fault.status is not None:
                retry = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else None
                return error(fault.status, "injected fault", headers=retry)
            header = request.headers.get("authorization", "")
            if not header.startswith("Bearer ") or not header.removeprefix("Bearer ").strip():
                return error(401, "The API key or AK/SK in the request is missing or invalid.")
            if request.method == "POST" and not isinstance(body, dict):
                return error(400, "The request body must be a JSON object.")
            try:
                return await handler(request, body)
            except Invalid as exc:
                return error(400, str(exc), exc.param)

        return run

    def task_of(request: Request) -> FakeTask | None:
        task_id = str(request.path_params["task_id"]).removeprefix(ID_PREFIX)
        task = farm.tasks.get(task_id)
        return task if task is not None and task.provider == PROVIDER else None

    def not_found(request: Request) -> Response:
        return error(404, f"The specified task {request.path_params['task_id']} is not found.", "id")

    async def create(request: Request, body: dict[str, Any]) -> Response:
        model = body.get("model")
        if not isinstance(model, str) or not MODEL.match(model):
            message = f"The model or endpoint {model} does not exist or you do not have access to it."
            return error_with(404, "InvalidEndpointOrModel.NotFound", "NotFound", message, "model")
        prompt = check_task(body)
        task = farm.create(PROVIDER, body["model"], prompt, "video", body)
        return await farm.answer(PROVIDER, "submit", json_response({"id": ID_PREFIX + task.id}))

    async def get(request: Request, body: Any) -> Response:
        task = task_of(request)
        if task is None or farm.find(task.id, PROVIDER) is None:
            return not_found(request)
        phase = task.phase()
        record: dict[str, Any] = {
            "id": ID_PREFIX + task.id,
            "model": task.model,
            "status": STATUS.get(phase, "failed"),
            "seed": task.body.get("seed", int(task.created_at) % 2**31),
            "resolution": task.body.get("resolution", "720p"),
            "ratio": task.body.get("ratio", "16:9"),
            "duration": task.body.get("duration", 5),
            "framespersecond": FPS,
            "created_at": int(task.created_at),
            "updated_at": int(time.time()),
        }
        if phase == "succeeded":
            root = str(request.url.replace(path="", query="")).rstrip("/")  # files live at the server root
            tokens = video_tokens(record["resolution"], record["ratio"], record["duration"])
            record["content"] = {"video_url": root + task.file_path()}
            record["usage"] = {"completion_tokens": tokens, "total_tokens": tokens}
        elif phase in FAILURES:
            code, message = FAILURES[phase]
            record["error"] = {"code": code, "message": message}
        return json_response(record)

    async def delete(request: Request, body: Any) -> Response:
        task = task_of(request)
        if task is None or task.phase() == "expired":
            return not_found(request)
        phase = task.phase()
        if phase == "queued":
            task.canceled = True
        elif phase in ("running", "canceled"):
            message = f"The task is {STATUS[phase]} and cannot be cancelled or deleted."
            return error_with(400, "OperationDenied", "BadRequest", message, "id")
        else:  # a finished task: DELETE removes its record
            del farm.tasks[task.id]
        return json_response({})

    return [
        Route(TASKS, endpoint("submit", create), methods=["POST"]),
        Route(TASKS + "/{task_id}", endpoint("poll", get), methods=["GET"]),
        Route(TASKS + "/{task_id}", endpoint("cancel", delete), methods=["DELETE"]),
    ]


def check_task(body: dict[str, Any]) -> str:
    """Validate a create body as Ark does; the prompt text ("" for image-only)."""
    unknown = sorted(set(body) - OPTIONAL_FIELDS - {"model", "content"})
    if unknown:
        raise Invalid(f"The parameter `{unknown[0]}` specified in the request is not valid.", unknown[0])
    content = body.get("content")
    if not isinstance(content, list) or not content:
        raise Invalid("The parameter `content` must be a non-empty array.", "content")
    texts = [item for item in content if isinstance(item, dict) and item.get("type") == "text"]
    images = [item for item in content if isinstance(item, dict) and item.get("type") == "image_url"]
    if len(texts) + len(images) != len(content) or len(texts) > 1:
        raise Invalid("content items are one text and image_url items.", "content")
    for item in texts:
        if set(item) != {"type", "text"} or not isinstance(item["text"], str):
            raise Invalid("A text item is {type: text, text: string}.", "content.text")
    roles = [check_image(item) for item in images]
    if len(set(roles)) != len(roles) and "reference_image" not in roles:
        raise Invalid("Each frame role may appear once.", "content.image_url.role")
    if "last_frame" in roles and "first_frame" not in roles:
        raise Invalid("A last_frame needs a first_frame.", "content.image_url.role")
    prompt = texts[0]["text"] if texts else ""
    if not prompt.strip() and not images:
        raise Invalid("A text prompt is required for text-to-video.", "content.text")
    check_options(body)
    return str(prompt)


def check_image(item: dict[str, Any]) -> str:
    if not set(item) <= {"type", "image_url", "role"}:
        raise Invalid("An image item is {type: image_url, image_url: {url}, role}.", "content.image_url")
    url = item.get("image_url")
    if not isinstance(url, dict) or not isinstance(url.get("url"), str) or not IMAGE_REF.match(url["url"]):
        raise Invalid("image_url.url must be an http(s) URL or a data:image/ URL.", "content.image_url.url")
    role = item.get("role", "first_frame")
    if role not in ROLES:
        raise Invalid(f"role must be one of {', '.join(sorted(ROLES))}.", "content.image_url.role")
    return str(role)


def check_options(body: dict[str, Any]) -> None:
    duration = body.get("duration", 5)
    if isinstance(duration, bool) or not isinstance(duration, int):
        raise Invalid("duration must be an integer.", "duration")
    if not MIN_DURATION_S <= duration <= MAX_DURATION_S:
        raise Invalid(f"duration must be in [{MIN_DURATION_S}, {MAX_DURATION_S}].", "duration")
    if body.get("ratio", "16:9") not in RATIOS:
        raise Invalid(f"ratio must be one of {', '.join(sorted(RATIOS))}.", "ratio")
    if body.get("resolution", "720p") not in RESOLUTIONS:
        raise Invalid(f"resolution must be one of {', '.join(sorted(RESOLUTIONS))}.", "resolution")
    for name in BOOLEAN_FIELDS & set(body):
        if not isinstance(body[name], bool):
            raise Invalid(f"{name} must be a boolean.", name)
