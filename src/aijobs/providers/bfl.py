"""The ``bfl`` kind: Black Forest Labs' FLUX image API (``POST /v1/{model}``, then ``GET`` the
``polling_url`` it answers with) at ``https://api.bfl.ai`` by default, key in ``x-key``.

BFL answers errors with an HTTP status and FastAPI's ``{"detail": ...}``; :func:`aijobs.providers.http.
error_for` maps those (402 out of credits → auth, 403 bad key → auth, 422 bad input → rejected,
429 too many active tasks → rate limited, 5xx → unavailable). A task's own outcome is its ``status``:
``Pending`` → ``Ready`` (``result.sample``, a signed URL valid for about ten minutes) | ``Error`` |
``Request Moderated`` | ``Content Moderated`` | ``Task not found``; newer models also say ``Reasoning``
and ``Generating`` while they work.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import quote

from aijobs import errors
from aijobs.providers import http
from aijobs.providers.base import ProviderContext, Task
from aijobs.providers.tasks import Poll, TaskAdapter, TaskState, headers_with_key, is_not_found
from aijobs.types.common import Media, RemoteFile, Usage
from aijobs.types.image import ImageInput

#: The formats BFL renders, as (content type, file extension).
FORMATS = {"png": ("image/png", "png"), "jpeg": ("image/jpeg", "jpg")}
RUNNING_STATES: dict[str, TaskState] = {"Pending": "queued", "Reasoning": "running", "Generating": "running"}
FILTERED_STATES = frozenset({"Request Moderated", "Content Moderated"})
FAILED_STATES = frozenset({"Error", "Failed"})
GONE_STATE = "Task not found"


class BflImage(TaskAdapter):
    """One image per task: ``prompt``, ``width``/``height`` (our size, passed through: BFL wants
    multiples of 32), ``output_format``, and ``input_image`` (a URL or bare base64) to edit an image.

    ``n > 1`` and formats BFL does not render are refused before anything is sent.
    """

    BASE_URL = "https://api.bfl.ai"

    def __init__(self, context: ProviderContext) -> None:
        super().__init__(context)
        self.headers = headers_with_key(context, "x-key")

    async def submit(self, model: str, request: ImageInput, name: str | None = None) -> Task:
        """Create the task; BFL answers ``{id, polling_url}`` (the URL is where the result will be)."""
        if request.n > 1:
            raise self._refuse(model, f"BFL makes one image per task; {request.n} were asked for")
        if request.output_format not in FORMATS:
            raise self._refuse(model, f"BFL renders png or jpeg, not {request.output_format}")
        width, height = request.dimensions()
        body: dict[str, Any] = {
            "prompt": request.prompt,
            "width": width,
            "height": height,
            "output_format": request.output_format,
        }
        if request.image:
            body["input_image"] = _bare_image(request.image)
        data = http.as_dict(
            await self.call("POST", f"/v1/{quote(model, safe='')}", model, self.headers, body, submit=True)
        )
        task_id, polling_url = data.get("id"), data.get("polling_url")
        if not isinstance(task_id, str) or not task_id:
            raise self.bad(model, "the submit answer has no id", data)
        if not isinstance(polling_url, str) or not polling_url.startswith(("http://", "https://")):
            polling_url = self._result_url(task_id)
        return Task(task_id, {"polling_url": polling_url, "output_format": request.output_format})

    async def poll(self, model: str, task: Task) -> Poll:
        """GET the polling URL BFL gave (regional hosts differ, so it is never rebuilt)."""
        try:
            url = str(task.data.get("polling_url") or self._result_url(task.id))
            data = http.as_dict(await self.call("GET", url, model, self.headers))
        except errors.ProviderError as exc:
            if is_not_found(exc):
                return self.gone(model, task)
            raise
        status = str(data.get("status") or "")
        progress = _progress(data.get("progress"))
        if status in RUNNING_STATES:
            # Older models stay "Pending" while they render; a progress above zero says they started.
            state: TaskState = "running" if progress else RUNNING_STATES[status]
            return Poll(state, status, progress=progress)
        if status == GONE_STATE:
            return self.gone(model, task, status)
        if status in FILTERED_STATES:
            return self.failed(model, status, f"{status}: {_details(data)}", errors.ProviderContentFiltered)
        if status in FAILED_STATES:
            return self.failed(model, status, f"{status}: {_details(data)}", errors.ProviderUnavailable)
        if status != "Ready":
            raise self.bad(model, f"unknown task status {status!r}", data)
        sample = http.as_dict(data.get("result")).get("sample")
        if not isinstance(sample, str) or not sample.startswith(("http://", "https://")):
            raise self.bad(model, "a Ready task has no result.sample URL", data)
        content_type, extension = FORMATS.get(str(task.data.get("output_format")), FORMATS["png"])
        outputs: list[Media | RemoteFile] = [RemoteFile(sample, content_type, extension)]
        return Poll("succeeded", status, progress=1.0, outputs=outputs, usage=Usage(units=1))

    def _result_url(self, task_id: str) -> str:
        """Where a task's result is when BFL gave no polling URL (older deployments): the global endpoint."""
        return f"{self.base_url}/v1/get_result?id={quote(task_id, safe='')}"

    def _refuse(self, model: str, why: str) -> errors.ProviderRejected:
        return errors.ProviderRejected(
            f"{self.context.name} {model}: {why}", provider=self.context.name, model=model
        )


def _bare_image(image: str) -> str:
    """A URL as is; a ``data:`` URL as the bare base64 after its comma (BFL decodes it itself)."""
    if image.startswith("data:") and "," in image:
        return image.split(",", 1)[1]
    return image


def _progress(value: Any) -> float | None:
    """BFL's ``progress`` (0..1, null on models that do not report it), clamped."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return min(max(float(value), 0.0), 1.0)


def _details(data: dict[str, Any]) -> str:
    """Whatever BFL said about a failure (``details`` is free-form), briefly."""
    details = data.get("details")
    if isinstance(details, dict):
        return "; ".join(f"{k}: {v}" for k, v in details.items())[:200] or "no details"
    return str(details)[:200] if details else "no details"
