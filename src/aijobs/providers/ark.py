"""Doubao Seedance video on Volcengine Ark: create a content-generation task, poll it, DELETE cancels.

``https://ark.cn-beijing.volces.com`` by default (BytePlus accounts set ``base_url`` to
``https://ark.ap-southeast.bytepluses.com``), Bearer key. Ark answers errors with an HTTP status and
``{"error": {"code", "message", "param", "type"}}``; :func:`aijobs.providers.http.error_for` maps those
(400 InvalidParameter → rejected, 401 → auth, 404 → model not found, 429 → rate limited, 5xx →
unavailable; a code naming sensitive content → content filtered). Seedance bills by tokens, known only
when the task ends: a succeeded poll carries ``usage.completion_tokens`` (``total_tokens`` when that is
missing; for video they are the same), which the price book prices per million output tokens. Ark
counts a video's tokens from its pixels: width x height x frames per second x seconds / 1024, so a
higher resolution or a longer clip costs more.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from aijobs import errors
from aijobs.providers import http
from aijobs.providers.base import ProviderContext, Task
from aijobs.providers.tasks import Poll, TaskAdapter, TaskState, is_not_found
from aijobs.types.common import RemoteFile, Usage
from aijobs.types.video import VideoInput

TASKS_PATH = "/api/v3/contents/generations/tasks"
RUNNING_STATES: dict[str, TaskState] = {"queued": "queued", "running": "running"}
#: A failed task's ``error.code``: moderation (``InputTextSensitiveContentDetected``,
#: ``OutputVideoSensitiveContentDetected``, …) or a refused input (``InvalidParameter``, ``InvalidImage…``).
#: Anything else (``InternalServiceError``, a code we have not seen) counts as the provider's failure,
#: which another provider may not share.
FILTERED_CODE = re.compile(r"sensitive|risk", re.IGNORECASE)
REJECTED_CODE = re.compile(r"^invalid|notsupported|unsupported", re.IGNORECASE)
#: Statuses a DELETE refuses with: the task is running (400/409) or already gone (404).
NOT_CANCELABLE = frozenset({400, 404, 409})


class SeedanceVideo(TaskAdapter):
    """``POST /api/v3/contents/generations/tasks`` → ``GET …/tasks/{id}`` → ``content.video_url``.

    The prompt goes as plain text in ``content``; duration, ratio and resolution as top-level fields
    (older Ark docs put them as ``--flags`` in the text); a first frame as an ``image_url`` item with
    ``role: "first_frame"``. The video URL lasts about 24 h.
    """

    BASE_URL = "https://ark.cn-beijing.volces.com"

    def __init__(self, context: ProviderContext) -> None:
        super().__init__(context)
        self.headers = http.json_headers(context)

    async def submit(self, model: str, request: VideoInput, name: str | None = None) -> Task:
        """Create the task; Ark answers ``{"id": "cgt-…"}``."""
        content: list[dict[str, Any]] = [{"type": "text", "text": request.prompt}]
        if request.image:
            content.append({"type": "image_url", "image_url": {"url": request.image}, "role": "first_frame"})
        body = {
            "model": model,
            "content": content,
            "duration": request.duration_s,
            "ratio": request.aspect_ratio,
            "resolution": request.resolution,
        }
        data = await self.call("POST", TASKS_PATH, model, self.headers, body, submit=True)
        task_id = http.as_dict(data).get("id")
        if not isinstance(task_id, str) or not task_id:
            raise self.bad(model, "the submit answer has no id", data)
        return Task(task_id, {})

    async def poll(self, model: str, task: Task) -> Poll:
        """Read the task; a 404 means Ark no longer has it."""
        try:
            data = await self._read(task, model)
        except errors.ProviderError as exc:
            if is_not_found(exc):
                return self.gone(model, task)
            raise
        status = str(data.get("status") or "")
        if status in RUNNING_STATES:
            return Poll(RUNNING_STATES[status], status)
        if status == "cancelled":
            return Poll("canceled", status)
        if status == "failed":
            return self._failure(model, data)
        if status == "expired":  # not run within execution_expires_after: Ark's queue, not the input
            return self.failed(model, status, "the task expired before it ran", errors.ProviderUnavailable)
        if status != "succeeded":
            raise self.bad(model, f"unknown task status {status!r}", data)
        return self._succeeded(model, data)

    async def cancel(self, model: str, task: Task) -> bool:
        """``DELETE …/tasks/{id}``: Ark cancels a queued task; a running one it refuses (→ ``False``)."""
        try:
            await self.call("DELETE", f"{TASKS_PATH}/{quote(task.id, safe='')}", model, self.headers)
        except errors.ProviderError as exc:
            if exc.status in NOT_CANCELABLE:
                return False
            raise
        return True

    def _succeeded(self, model: str, data: dict[str, Any]) -> Poll:
        url = http.as_dict(data.get("content")).get("video_url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise self.bad(model, "a succeeded task has no content.video_url", data)
        usage = http.as_dict(data.get("usage"))
        tokens = next(
            (t for t in (usage.get("completion_tokens"), usage.get("total_tokens")) if _count(t)), None
        )
        if tokens is None:
            raise self.bad(model, "a succeeded task has no usage.completion_tokens", data)
        duration = data.get("duration")
        duration_s = float(duration) if isinstance(duration, int | float) and duration > 0 else None
        # Width and height stay unknown: Seedance's pixel sizes per resolution and ratio are its own
        # (720p 16:9 is not 1280x720), and the worker reads them off the file.
        output = RemoteFile(url, "video/mp4", "mp4", duration_s=duration_s)
        return Poll(
            "succeeded", "succeeded", progress=1.0, outputs=[output],
            usage=Usage(output_tokens=tokens, units=duration_s or 0.0),
        )  # fmt: skip

    def _failure(self, model: str, data: dict[str, Any]) -> Poll:
        error = http.as_dict(data.get("error"))
        code, message = str(error.get("code") or ""), str(error.get("message") or "the task failed")
        cls: type[errors.ProviderError] = errors.ProviderUnavailable
        if FILTERED_CODE.search(code):
            cls = errors.ProviderContentFiltered
        elif REJECTED_CODE.search(code):
            cls = errors.ProviderRejected
        return self.failed(model, "failed", f"{code}: {message}" if code else message, cls)

    async def _read(self, task: Task, model: str) -> dict[str, Any]:
        """GET the task record (its ``error`` field is the task's outcome, not a failed call)."""
        path = f"{TASKS_PATH}/{quote(task.id, safe='')}"
        data = await self.call("GET", path, model, self.headers, embedded=False)
        if not isinstance(data, dict):
            raise self.bad(model, "the answer is not a JSON object", data)
        return data


def _count(value: Any) -> bool:
    """Whether ``value`` is a token count (an int, not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
