"""TEST FAKE: Black Forest Labs' FLUX API (mounted at ``/bfl``); not a provider, never used in production.

Speaks BFL's documented wire format over the shared render farm:

- ``POST /v1/{model}`` (header ``x-key``) ``{prompt, width, height, output_format, input_image, seed,
  safety_tolerance, prompt_upsampling, aspect_ratio, webhook_url, webhook_secret}`` → ``{id,
  polling_url}``, the polling URL absolute on this server (``…/bfl/v1/get_result?id=…``), as BFL answers
  with its regional host;
- ``GET /v1/get_result?id=…`` → ``{id, status, result, progress, details, preview}``: ``Pending``
  (queued) → ``Generating`` with ``progress`` (running) → ``Ready`` with ``result.sample`` |
  ``Error`` | ``Content Moderated``; an unknown or expired id → ``Task not found`` (HTTP 200).

Errors are FastAPI's ``{"detail": ...}``: 403 without an ``x-key`` (any non-empty key is accepted), 404
for an unknown model, 422 with a ``detail`` list for a bad body; injected faults answer their status
with ``{"detail": "..."}`` (and ``Retry-After`` when given).

Assumptions: unknown body fields are refused with 422 (BFL may ignore them; refusing catches a field
sent under the wrong name); width and height must be multiples of 32 in 256..1440 (flux-pro-1.1's
documented range, applied to every model here); while rendering the status is ``Generating`` (newer
models' word; older ones stay ``Pending`` with a progress).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from tests.fakes.media.farm import FakeTask, Farm, json_response

PROVIDER = "bfl"
MODELS = frozenset(
    {"flux-pro-1.1", "flux-pro-1.1-ultra", "flux-pro", "flux-dev", "flux-kontext-pro", "flux-kontext-max"}
    | {"flux-2-pro", "flux-2-flex"}
)
FIELDS = frozenset(
    {"prompt", "width", "height", "output_format", "input_image", "seed", "safety_tolerance"}
    | {"prompt_upsampling", "aspect_ratio", "webhook_url", "webhook_secret"}
)
MIN_SIDE_PX, MAX_SIDE_PX, SIDE_STEP_PX = 256, 1440, 32
STATUSES = {
    "queued": "Pending",
    "running": "Generating",
    "succeeded": "Ready",
    "failed": "Error",
    "moderated": "Content Moderated",
    "canceled": "Error",
}


class BflError(Exception):
    """An answer in BFL's (FastAPI's) error shape."""

    def __init__(self, status: int, detail: Any, retry_after: float | None = None) -> None:
        super().__init__(str(detail))
        self.status, self.detail, self.retry_after = status, detail, retry_after

    def response(self) -> Response:
        headers = {"Retry-After": f"{self.retry_after:g}"} if self.retry_after is not None else None
        return json_response({"detail": self.detail}, self.status, headers)


def invalid(field: str, message: str, kind: str = "value_error") -> BflError:
    """A 422 like FastAPI's request validation answers."""
    return BflError(422, [{"loc": ["body", field], "msg": message, "type": kind}])


def server_root(request: Request) -> str:
    """The server's own root URL (where ``/files`` lives), whatever Mount did to ``root_path``."""
    return str(request.base_url).rstrip("/")


def mount_root(request: Request) -> str:
    """This fake's root URL: the server root plus the Mount's prefix (``/bfl``)."""
    mounted = str(request.scope.get("root_path", ""))[len(str(request.scope.get("app_root_path", ""))) :]
    return server_root(request) + mounted


def check_body(body: Any) -> str:
    """The prompt of a valid create body; else the 422 BFL answers."""
    if not isinstance(body, dict):
        raise invalid("body", "Input should be a valid JSON object", "model_attributes_type")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise invalid(unknown[0], "Extra inputs are not permitted", "extra_forbidden")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise invalid("prompt", "Field required", "missing")
    for side in ("width", "height"):
        value = body.get(side, 1024)
        if isinstance(value, bool) or not isinstance(value, int):
            raise invalid(side, "Input should be a valid integer", "int_type")
        if not MIN_SIDE_PX <= value <= MAX_SIDE_PX or value % SIDE_STEP_PX:
            raise invalid(side, f"must be a multiple of {SIDE_STEP_PX} in {MIN_SIDE_PX}..{MAX_SIDE_PX}")
    if body.get("output_format", "jpeg") not in ("jpeg", "png"):
        raise invalid("output_format", "Input should be 'jpeg' or 'png'", "enum")
    image = body.get("input_image")
    if image is not None and (not isinstance(image, str) or image.startswith("data:")):
        raise invalid("input_image", "must be an image URL or base64 without a data: prefix")
    return prompt


def result_body(request: Request, task: FakeTask) -> dict[str, Any]:
    """What ``get_result`` answers for a task the farm knows."""
    phase = task.phase()
    status = STATUSES[phase]
    body: dict[str, Any] = {"id": task.id, "status": status, "result": None, "progress": None}
    body |= {"details": None, "preview": None}
    if phase == "running":
        body["progress"] = task.progress()
    elif phase == "succeeded":
        sample = server_root(request) + task.file_path(0)
        body["result"] = {"sample": sample, "prompt": task.prompt, "seed": 42}
        body["result"] |= {"start_time": task.created_at, "end_time": task.created_at + task.render_s}
        body["progress"] = 1.0
    elif phase in ("failed", "canceled"):
        body["details"] = {"error": "Internal error during generation"}
    elif phase == "moderated":
        body["details"] = {"Moderation Reasons": ["Content policy"]}
    return body


def routes(farm: Farm) -> list[BaseRoute]:
    """BFL's create and get_result endpoints over ``farm``."""

    async def guard(request: Request, step: str) -> Any:
        body = await farm.record(request, PROVIDER, step)
        fault = await farm.fault(PROVIDER, step)
        if fault is not None and fault.status is not None:
            raise BflError(fault.status, f"injected fault {fault.status}", fault.retry_after)
        if not request.headers.get("x-key"):
            raise BflError(403, "Not authenticated")
        return body

    async def create(request: Request) -> Response:
        model = request.path_params["model"]
        try:
            body = await guard(request, "submit")
            if model not in MODELS:
                raise BflError(404, "Not Found")
            prompt = check_body(body)
        except BflError as exc:
            return exc.response()
        task = farm.create(PROVIDER, model, prompt, "image", body)
        polling_url = f"{mount_root(request)}/v1/get_result?id={quote(task.id, safe='')}"
        return await farm.answer(
            PROVIDER, "submit", json_response({"id": task.id, "polling_url": polling_url})
        )

    async def get_result(request: Request) -> Response:
        task_id = request.query_params.get("id", "")
        try:
            await guard(request, "poll")
            if not task_id:
                raise BflError(422, [{"loc": ["query", "id"], "msg": "Field required", "type": "missing"}])
        except BflError as exc:
            return exc.response()
        task = farm.find(task_id, PROVIDER)
        if task is None:
            return json_response(
                {"id": task_id, "status": "Task not found", "result": None, "progress": None}
            )
        return json_response(result_body(request, task))

    return [
        Route("/v1/get_result", get_result, methods=["GET"]),
        Route("/v1/{model:str}", create, methods=["POST"]),
    ]
