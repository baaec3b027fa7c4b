"""TEST FAKE of Alibaba DashScope's async Wan APIs (Model Studio); never used in production.

Mounted under ``/dashscope`` by :mod:`tests.fakes.media.app`; tasks live on the shared render farm.

- ``POST /api/v1/services/aigc/video-generation/video-synthesis`` ``{model, input: {prompt, img_url?},
  parameters: {size? | resolution?, duration?, prompt_extend?}}``: Wan video. ``*-i2v-*`` models need
  ``input.img_url`` (an http(s) or data URL) and take a resolution tier, not a size.
- ``POST /api/v1/services/aigc/text2image/image-synthesis`` ``{model, input: {prompt},
  parameters: {size: "W*H" (512..1440 a side), n (1..4), prompt_extend?}}``: Wan text-to-image.
- Both answer ``{output: {task_id, task_status: "PENDING"}, request_id}`` and need the header
  ``X-DashScope-Async: enable``; without it DashScope answers 403 AccessDenied ("current user api does
  not support synchronous calls").
- ``GET /api/v1/tasks/{task_id}`` → ``{request_id, output: {task_id, task_status, submit_time,
  scheduled_time?, end_time?, video_url? | results?, task_metrics?, code?, message?}, usage?}``.
  Farm phases map to PENDING / RUNNING / SUCCEEDED / FAILED / CANCELED; ``[fail]`` is FAILED with
  ``InternalError``, ``[moderate]`` FAILED with ``DataInspectionFailed``; an unknown or ``[expire]``d
  task is ``UNKNOWN`` (with 200, as DashScope answers it).
- ``POST /api/v1/tasks/{task_id}/cancel``: a PENDING task is canceled; anything else is 400
  ``UnsupportedOperation``.

Outputs are the farm's ``/files/{task}/{i}.{ext}`` at the server root. Every call needs
``Authorization: Bearer <any>`` (else 401 InvalidApiKey); errors are ``{code, message, request_id}``.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from tests.fakes.media.farm import FakeTask, Farm, json_response
from tests.fakes.providers import error_response

PROVIDER = "dashscope"
VIDEO_SIZES = frozenset({"832*480", "480*832", "624*624", "1280*720", "720*1280", "960*960", "1088*832"})
VIDEO_SIZES |= {"832*1088", "1920*1080", "1080*1920", "1440*1440", "1632*1248", "1248*1632"}
RESOLUTIONS = frozenset({"480P", "720P", "1080P"})
VIDEO_DURATIONS_S = frozenset({5, 10})
IMAGE_SIDE_PX = (512, 1440)
_SIZE = re.compile(r"([0-9]{2,5})\*([0-9]{2,5})")
_STATUS = {"queued": "PENDING", "running": "RUNNING", "succeeded": "SUCCEEDED", "canceled": "CANCELED"}
_STATUS |= {"failed": "FAILED", "moderated": "FAILED"}
_FAILURE = {
    "failed": ("InternalError", "An internal error has occured, please try again later."),
    "moderated": ("DataInspectionFailed", "Output data may contain inappropriate content."),
}


def _error(
    status: int, code: str | None = None, message: str | None = None, retry_after: float | None = None
) -> Response:
    return error_response(PROVIDER, status, message, code, retry_after)


async def _gate(request: Request, farm: Farm, step: str) -> tuple[Any, Response | None]:
    """Journal the call, then answer an injected fault or a missing key; the body when neither."""
    body = await farm.record(request, PROVIDER, step)
    fault = await farm.fault(PROVIDER, step)
    if fault is not None and fault.status is not None:
        return body, _error(fault.status, retry_after=fault.retry_after)
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return body, _error(401, "InvalidApiKey", "Invalid API-key provided.")
    return body, None


def _common(body: Any) -> tuple[dict[str, Any], dict[str, Any]] | str:
    """``(input, parameters)`` of a submit body, or why DashScope refuses it."""
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return "Field required: model"
    payload, parameters = body.get("input"), body.get("parameters", {})
    if not isinstance(payload, dict):
        return "Field required: input"
    if not isinstance(parameters, dict):
        return "parameters must be an object"
    if "prompt" in payload and not isinstance(payload["prompt"], str):
        return "input.prompt must be a string"
    if not isinstance(parameters.get("prompt_extend", True), bool):
        return "parameters.prompt_extend must be a boolean"
    return payload, parameters


def _invalid_video(model: str, payload: dict[str, Any], parameters: dict[str, Any]) -> str | None:
    image_to_video = "i2v" in model
    image = payload.get("img_url")
    duration_s = parameters.get("duration", 5)
    image_ok = image is None or str(image).startswith(("http://", "https://", "data:image/"))
    checks = [
        (image_to_video or bool(str(payload.get("prompt", "")).strip()), "Field required: input.prompt"),
        (not image_to_video or isinstance(image, str), "Field required: input.img_url"),
        (image_ok, "input.img_url is not a valid url"),
        (parameters.get("size", "1280*720") in VIDEO_SIZES, "The size is not supported."),
        (parameters.get("resolution", "720P") in RESOLUTIONS, "resolution must be 480P, 720P or 1080P"),
        (type(duration_s) is int and duration_s in VIDEO_DURATIONS_S, "duration must be 5 or 10"),
    ]
    return next((message for ok, message in checks if not ok), None)


def _invalid_image(payload: dict[str, Any], parameters: dict[str, Any]) -> str | None:
    match = _SIZE.fullmatch(str(parameters.get("size", "1024*1024")))
    low, high = IMAGE_SIDE_PX
    n = parameters.get("n", 4)
    size_ok = match is not None and all(low <= int(side) <= high for side in match.groups())
    checks = [
        (bool(str(payload.get("prompt", "")).strip()), "Field required: input.prompt"),
        (size_ok, "The size is not supported."),
        (type(n) is int and 1 <= n <= 4, "parameters.n must be between 1 and 4"),
    ]
    return next((message for ok, message in checks if not ok), None)


def _stamp(at_s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at_s)) + f".{int(at_s * 1000) % 1000:03d}"


def _task_view(request: Request, task: FakeTask) -> dict[str, Any]:
    """The ``GET /tasks/{id}`` answer for ``task`` in its current phase."""
    phase = task.phase()
    output: dict[str, Any] = {
        "task_id": task.id,
        "task_status": _STATUS[phase],
        "submit_time": _stamp(task.created_at),
    }
    if phase != "queued":
        output["scheduled_time"] = _stamp(task.created_at + task.render_s / 3)
    answer: dict[str, Any] = {"request_id": str(uuid.uuid4()), "output": output}
    if phase in ("queued", "running"):
        return answer
    output["end_time"] = _stamp(min(time.time(), task.created_at + task.render_s))
    if phase in _FAILURE:
        output["code"], output["message"] = _FAILURE[phase]
        return answer
    if phase != "succeeded":
        return answer
    root = request.url.replace(query="", fragment="")
    urls = [str(root.replace(path=task.file_path(i))) for i in range(_count(task))]
    parameters = task.body.get("parameters", {})
    if task.kind == "video":
        output["video_url"] = urls[0]
        duration_s = parameters.get("duration", 5)
        ratio = parameters.get("size") or parameters.get("resolution", "720P")
        answer["usage"] = {"video_duration": duration_s, "video_ratio": ratio, "video_count": 1}
    else:
        output["results"] = [{"url": url, "orig_prompt": task.prompt} for url in urls]
        output["task_metrics"] = {"TOTAL": len(urls), "SUCCEEDED": len(urls), "FAILED": 0}
        answer["usage"] = {"image_count": len(urls)}
    return answer


def _count(task: FakeTask) -> int:
    return int(task.body.get("parameters", {}).get("n", 4)) if task.kind == "image" else 1


def routes(farm: Farm) -> list[BaseRoute]:
    """The DashScope endpoints, relative to the ``/dashscope`` mount."""

    async def submit(request: Request, kind: str) -> Response:
        body, refused = await _gate(request, farm, "submit")
        if refused is not None:
            return refused
        if request.headers.get("x-dashscope-async") != "enable":
            return _error(403, "AccessDenied", "current user api does not support synchronous calls")
        checked = _common(body)
        if isinstance(checked, str):
            return _error(400, "InvalidParameter", checked)
        payload, parameters = checked
        model = body["model"]
        if not model.startswith("wan") or ("t2i" in model) != (kind == "image"):
            return _error(400, "InvalidParameter", "Model not exist.")
        why = (
            _invalid_video(model, payload, parameters)
            if kind == "video"
            else _invalid_image(payload, parameters)
        )
        if why is not None:
            return _error(400, "InvalidParameter", why)
        task = farm.create(PROVIDER, model, payload.get("prompt", ""), kind, body)
        output = {"task_id": task.id, "task_status": "PENDING"}
        answer = {"output": output, "request_id": str(uuid.uuid4())}
        return await farm.answer(PROVIDER, "submit", json_response(answer))

    async def video(request: Request) -> Response:
        return await submit(request, "video")

    async def image(request: Request) -> Response:
        return await submit(request, "image")

    async def task(request: Request) -> Response:
        _, refused = await _gate(request, farm, "poll")
        if refused is not None:
            return refused
        task_id = request.path_params["task_id"]
        found = farm.find(task_id, PROVIDER)
        if found is None:
            output = {"task_id": task_id, "task_status": "UNKNOWN"}
            return json_response({"request_id": str(uuid.uuid4()), "output": output})
        return json_response(_task_view(request, found))

    async def cancel(request: Request) -> Response:
        _, refused = await _gate(request, farm, "cancel")
        if refused is not None:
            return refused
        found = farm.tasks.get(request.path_params["task_id"])
        if found is None or found.provider != PROVIDER or found.phase() != "queued":
            message = "Failed to cancel the task, please confirm if the task is in PENDING status."
            return _error(400, "UnsupportedOperation", message)
        found.canceled = True
        return json_response({"request_id": str(uuid.uuid4())})

    return [
        Route("/api/v1/services/aigc/video-generation/video-synthesis", video, methods=["POST"]),
        Route("/api/v1/services/aigc/text2image/image-synthesis", image, methods=["POST"]),
        Route("/api/v1/tasks/{task_id}", task, methods=["GET"]),
        Route("/api/v1/tasks/{task_id}/cancel", cancel, methods=["POST"]),
    ]
