"""TEST FAKE: Kling's video API (mounted at ``/kling``); not a provider, never used in production.

Speaks Kling's documented wire format over the shared render farm:

- ``POST /v1/videos/text2video`` and ``POST /v1/videos/image2video`` → ``{code: 0, message: "SUCCEED",
  request_id, data: {task_id, task_status: "submitted", task_info, created_at, updated_at}}``;
- ``GET /v1/videos/{text2video|image2video}/{id}`` (the path must match the create call), where ``id``
  is the task id or the ``external_task_id`` the create call named the task with (Kling's query takes
  either) → ``data.task_status`` ``submitted`` → ``processing`` → ``succeed`` (``task_result.videos[{id,
  url, duration}]``) | ``failed`` (``task_status_msg``); ``data.task_info.external_task_id`` echoes the
  caller's name for the task.

Errors are Kling's envelope ``{code, message, request_id}`` with the HTTP status Kling's docs pair with
the code: 401 + 1000-1004 (auth), 400 + 1201 (bad parameters), 404 + 1203 (no such task), 429 + 1302
(too fast), 429 + 1102 (resource pack used up: an injected 402 answers this, as Kling never sends 402),
5xx + 5000/5001/5002.

Auth: ``Authorization: Bearer <HS256 JWT>`` whose ``iss`` is an access key in :data:`KEYS` and whose
signature verifies with that key's secret; ``nbf``/``exp`` are enforced.

Assumptions (not in Kling's public docs): unknown body fields are refused with 1201 (Kling may ignore
them; refusing catches an adapter sending a field under the wrong name); a moderated task fails with
"Failure to pass the risk control system"; a video's ``duration`` is the requested length plus 0.1 s
(Kling reports the rendered length, e.g. ``"5.1"``); an ``external_task_id`` already used in the account
(the docs say it must be unique there) is refused with 400 + 1201, creating nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
import uuid
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from tests.fakes.media.farm import FakeTask, Farm, json_response

PROVIDER = "kling"
KEYS = {"test-access": "test-secret"}  # access key → secret key
MODELS = frozenset(
    {"kling-v1", "kling-v1-5", "kling-v1-6", "kling-v2-master", "kling-v2-1", "kling-v2-1-master"}
    | {"kling-v2-5-turbo", "kling-v2-6"}
)
COMMON_FIELDS = frozenset(
    {"model_name", "prompt", "negative_prompt", "cfg_scale", "mode", "camera_control", "duration"}
    | {"callback_url", "external_task_id"}
)
FIELDS = {
    "text2video": COMMON_FIELDS | {"aspect_ratio"},
    "image2video": COMMON_FIELDS | {"image", "image_tail", "static_mask", "dynamic_masks"},
}
MAX_PROMPT_CHARS = 2500
#: An injected HTTP status → the code Kling sends with it (and the status it really uses).
FAULT_CODES = {400: (400, 1201), 401: (401, 1000), 402: (429, 1102), 403: (403, 1103), 404: (404, 1203)}
FAULT_CODES |= {429: (429, 1302), 500: (500, 5000), 503: (503, 5001), 504: (504, 5002)}
PHASES = {"queued": "submitted", "running": "processing", "succeeded": "succeed"}
FAILURES = {
    "failed": "Internal error: video generation failed, please try again later",
    "moderated": "Failure to pass the risk control system",
    "canceled": "The task was canceled",
}


class KlingError(Exception):
    """An answer in Kling's error envelope."""

    def __init__(self, status: int, code: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after

    def response(self) -> Response:
        headers = {"Retry-After": f"{self.retry_after:g}"} if self.retry_after is not None else None
        body = {"code": self.code, "message": self.message, "request_id": uuid.uuid4().hex}
        return json_response(body, self.status, headers)


def server_root(request: Request) -> str:
    """The server's own root URL (where ``/files`` lives), whatever Mount did to ``root_path``."""
    return str(request.base_url).rstrip("/")


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def check_jwt(request: Request) -> None:
    """Raise the KlingError Kling answers for a missing, malformed, unsigned or out-of-date token."""
    auth = request.headers.get("authorization", "")
    if not auth:
        raise KlingError(401, 1001, "Authorization is empty")
    scheme, _, token = auth.partition(" ")
    parts = token.split(".")
    if scheme != "Bearer" or len(parts) != 3:
        raise KlingError(401, 1002, "Authorization is invalid")
    try:
        header, claims = orjson.loads(_b64url_decode(parts[0])), orjson.loads(_b64url_decode(parts[1]))
        signature = _b64url_decode(parts[2])
    except (binascii.Error, ValueError):
        raise KlingError(401, 1002, "Authorization is invalid") from None
    if not isinstance(header, dict) or header.get("alg") != "HS256" or not isinstance(claims, dict):
        raise KlingError(401, 1002, "Authorization is invalid")
    secret = KEYS.get(str(claims.get("iss")))
    if secret is None:
        raise KlingError(401, 1000, "Authentication failed: unknown access key")
    expected = hmac.new(secret.encode(), f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(expected, signature):
        raise KlingError(401, 1000, "Authentication failed: bad signature")
    now = time.time()
    nbf, exp = claims.get("nbf"), claims.get("exp")
    if not isinstance(nbf, int | float) or not isinstance(exp, int | float):
        raise KlingError(401, 1002, "Authorization is invalid: nbf and exp are required")
    if nbf > now:
        raise KlingError(401, 1003, "Authorization is not yet valid")
    if exp <= now:
        raise KlingError(401, 1004, "Authorization has expired")


def check_body(path: str, body: Any) -> str:
    """The prompt of a valid create body; else the 400 Kling answers."""
    if not isinstance(body, dict):
        raise KlingError(400, 1200, "Invalid request: the body must be a JSON object")
    unknown = sorted(set(body) - FIELDS[path])
    if unknown:
        raise KlingError(400, 1201, f"Invalid parameters: unknown field {unknown[0]}")
    prompt = body.get("prompt", "")
    if not isinstance(prompt, str) or len(prompt) > MAX_PROMPT_CHARS:
        raise KlingError(
            400, 1201, f"Invalid parameters: prompt must be a string of at most {MAX_PROMPT_CHARS}"
        )
    if path == "text2video" and not prompt.strip():
        raise KlingError(400, 1201, "Invalid parameters: prompt is required")
    allowed = {
        "model_name": MODELS,
        "mode": {"std", "pro"},
        "duration": {"5", "10"},
        "aspect_ratio": {"16:9", "9:16", "1:1"},
    }
    for name, values in allowed.items():
        if name in body and (not isinstance(body[name], str) or body[name] not in values):
            raise KlingError(400, 1201, f"Invalid parameters: {name} must be one of {sorted(values)}")
    if path == "image2video":
        check_image(body.get("image"))
    return prompt


def check_image(image: Any) -> None:
    """Kling takes an image URL or bare base64; a ``data:`` prefix is refused."""
    if not isinstance(image, str) or not image:
        raise KlingError(400, 1201, "Invalid parameters: image is required")
    if image.startswith(("http://", "https://")):
        return
    if image.startswith("data:"):
        raise KlingError(400, 1201, "Invalid parameters: image base64 must not carry a data: prefix")
    try:
        base64.b64decode(image, validate=True)
    except (binascii.Error, ValueError):
        raise KlingError(400, 1201, "Invalid parameters: image is neither a URL nor base64") from None


def task_record(request: Request, task: FakeTask) -> dict[str, Any]:
    """The ``data`` block Kling answers a query with."""
    phase = task.phase()
    created_ms = int(task.created_at * 1000)
    record: dict[str, Any] = {
        "task_id": task.id,
        "task_status": PHASES.get(phase, "failed"),
        "task_status_msg": FAILURES.get(phase, ""),
        "task_info": info(task),
        "created_at": created_ms,
        "updated_at": int(time.time() * 1000),
    }
    if phase == "succeeded":
        duration_s = int(task.body.get("duration", "5")) + 0.1
        url = server_root(request) + task.file_path(0)
        record["task_result"] = {
            "videos": [{"id": f"{task.id}-0", "url": url, "duration": f"{duration_s:g}"}]
        }
    return record


def info(task: FakeTask) -> dict[str, Any]:
    """``task_info``: the creation parameters Kling echoes (the caller's name for the task)."""
    external = task.body.get("external_task_id")
    return {"external_task_id": external} if external else {}


def path_of(task: FakeTask) -> str:
    """The create path a task came from (only image2video bodies carry an image)."""
    return "image2video" if "image" in task.body else "text2video"


def routes(farm: Farm) -> list[BaseRoute]:
    """Kling's create and query endpoints over ``farm``."""

    async def guard(request: Request, step: str) -> Any:
        body = await farm.record(request, PROVIDER, step)
        if request.path_params["path"] not in FIELDS:
            raise KlingError(404, 1203, "Requested resource does not exist")
        fault = await farm.fault(PROVIDER, step)
        if fault is not None and fault.status is not None:
            status, code = FAULT_CODES.get(fault.status, (fault.status, 5000))
            raise KlingError(status, code, f"injected fault {fault.status}", fault.retry_after)
        check_jwt(request)
        return body

    async def create(request: Request) -> Response:
        path = request.path_params["path"]
        try:
            body = await guard(request, "submit")
            prompt = check_body(path, body)
        except KlingError as exc:
            return exc.response()
        external = body.get("external_task_id") or None
        if external is not None and (not isinstance(external, str) or named(external) is not None):
            return KlingError(400, 1201, "Invalid parameters: external_task_id already exists").response()
        task = farm.create(PROVIDER, body.get("model_name", "kling-v1"), prompt, "video", body)
        created_ms = int(task.created_at * 1000)
        data: dict[str, Any] = {"task_id": task.id, "task_status": "submitted", "task_info": info(task)}
        data |= {"created_at": created_ms, "updated_at": created_ms}
        answer = {"code": 0, "message": "SUCCEED", "request_id": uuid.uuid4().hex, "data": data}
        return await farm.answer(PROVIDER, "submit", json_response(answer))

    def named(external: str) -> FakeTask | None:
        """The task the account created under ``external_task_id``, if any."""
        found = (t for t in farm.tasks.values() if t.provider == PROVIDER)
        return next((t for t in found if t.body.get("external_task_id") == external), None)

    async def query(request: Request) -> Response:
        try:
            await guard(request, "poll")
            wanted = request.path_params["task_id"]
            task = farm.find(wanted, PROVIDER)
            if task is None and (by_name := named(wanted)) is not None:
                task = farm.find(by_name.id, PROVIDER)
            if task is None or path_of(task) != request.path_params["path"]:
                raise KlingError(404, 1203, "Requested resource does not exist: task not found")
        except KlingError as exc:
            return exc.response()
        data = task_record(request, task)
        return json_response({"code": 0, "message": "SUCCEED", "request_id": uuid.uuid4().hex, "data": data})

    paths = "{path:str}"
    return [
        Route(f"/v1/videos/{paths}", create, methods=["POST"]),
        Route(f"/v1/videos/{paths}/{{task_id:str}}", query, methods=["GET"]),
    ]
