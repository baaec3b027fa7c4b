"""Alibaba Wan on DashScope (Model Studio): long-running ``video`` and ``image`` tasks, key as Bearer.

::

    submit  POST {base_url}/api/v1/services/aigc/video-generation/video-synthesis   (video)
            POST {base_url}/api/v1/services/aigc/text2image/image-synthesis         (image)
            header X-DashScope-Async: enable (the HTTP API has no synchronous mode)
            {model, input: {prompt, img_url?}, parameters: {...}} → {output: {task_id, task_status}}
    poll    GET  {base_url}/api/v1/tasks/{task_id}
            → {output: {task_status, video_url? | results?: [{url} | {code, message}], code?, message?},
               usage: {video_duration, …} | {image_count}}
    cancel  POST {base_url}/api/v1/tasks/{task_id}/cancel   (PENDING tasks only)

``task_status`` PENDING → queued, RUNNING → running, SUCCEEDED → succeeded, FAILED → failed,
CANCELED → canceled; UNKNOWN means DashScope no longer knows the task (it keeps them 24 h): gone.

``base_url`` is the host (``https://dashscope.aliyuncs.com``, or ``dashscope-intl`` for Singapore);
one ending in ``/api/v1``, as the ``dashscope`` rerank adapter takes it, works too, so one provider
entry serves both.

Video sizes are the documented text-to-video ones (``W*H``): 480p 832*480, 480*832, 624*624;
720p 1280*720, 720*1280, 960*960, 1088*832 (4:3), 832*1088 (3:4); 1080p 1920*1080, 1080*1920,
1440*1440, 1632*1248, 1248*1632. 21:9, and 4:3 or 3:4 at 480p, have none: refused before sending.
Image-to-video sends a resolution tier (``720P``) instead: the output takes the image's shape.
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field

from aijobs import errors
from aijobs.providers import http
from aijobs.providers.base import ProviderContext, Task, options_for
from aijobs.providers.tasks import Poll, TaskAdapter, TaskState, headers_with_key, is_not_found
from aijobs.types.common import RemoteFile, Usage
from aijobs.types.image import ImageInput
from aijobs.types.video import VideoInput

DEFAULT_BASE_URL = "https://dashscope.aliyuncs.com"
_STATES: dict[str, TaskState] = {
    "PENDING": "queued",
    "RUNNING": "running",
    "SUCCEEDED": "succeeded",
    "FAILED": "failed",
    "CANCELED": "canceled",
}
#: A failed task's ``code`` (matched as a substring, first hit wins) → our error; others are upstream faults.
_FAILURES: dict[str, type[errors.ProviderError]] = {
    "DataInspection": errors.ProviderContentFiltered,
    "IPInfringement": errors.ProviderContentFiltered,
    "InvalidParameter": errors.ProviderRejected,
    "InvalidApiKey": errors.ProviderAuth,
    "AccessDenied": errors.ProviderAuth,
    "Arrearage": errors.ProviderAuth,
    "Throttling": errors.ProviderRateLimited,
}
VIDEO_SIZES = {
    ("16:9", "480p"): "832*480", ("9:16", "480p"): "480*832", ("1:1", "480p"): "624*624",
    ("16:9", "720p"): "1280*720", ("9:16", "720p"): "720*1280", ("1:1", "720p"): "960*960",
    ("4:3", "720p"): "1088*832", ("3:4", "720p"): "832*1088",
    ("16:9", "1080p"): "1920*1080", ("9:16", "1080p"): "1080*1920", ("1:1", "1080p"): "1440*1440",
    ("4:3", "1080p"): "1632*1248", ("3:4", "1080p"): "1248*1632",
}  # fmt: skip
IMAGE_SIDE_PX = (512, 1440)  # each side of a Wan text-to-image output
MAX_IMAGES = 4  # per text-to-image task


class WanVideoOptions(BaseModel):
    """Per-model settings: the durations the model renders (wan2.2: 5 s only), and ``prompt_extend``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    durations_s: tuple[int, ...] = Field(default=(5, 10), min_length=1)
    prompt_extend: bool | None = None


class WanImageOptions(BaseModel):
    """Per-model settings: DashScope's ``prompt_extend`` (its own prompt rewriting)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt_extend: bool | None = None


class _DashScopeTask(TaskAdapter):
    """Submit to ``PATH``, poll and cancel through DashScope's shared task API."""

    BASE_URL: ClassVar[str] = DEFAULT_BASE_URL
    PATH: ClassVar[str]

    def __init__(self, context: ProviderContext) -> None:
        super().__init__(context)
        self.base_url = self.base_url.removesuffix("/api/v1")

    async def _submit(self, model: str, body: dict[str, Any], data: dict[str, Any]) -> Task:
        headers = {
            **headers_with_key(self.context, "Authorization", "Bearer "),
            "X-DashScope-Async": "enable",
        }
        answer = await self.call("POST", self.PATH, model, headers, body, submit=True)
        task_id = http.as_dict(http.as_dict(answer).get("output")).get("task_id")
        if not isinstance(task_id, str) or not task_id:
            raise self.bad(model, "the answer has no task_id", answer)
        return Task(task_id, data)

    async def poll(self, model: str, task: Task) -> Poll:
        try:
            answer = await self.call(
                "GET", f"/api/v1/tasks/{quote(task.id, safe='')}", model, self._headers()
            )
        except errors.ProviderError as exc:
            if is_not_found(exc):
                return self.gone(model, task)
            raise
        output = http.as_dict(http.as_dict(answer).get("output"))
        raw = str(output.get("task_status") or "")
        if raw == "UNKNOWN":
            return self.gone(model, task, raw)
        state = _STATES.get(raw)
        if state is None:
            raise self.bad(model, f"unknown task_status {raw!r}", answer)
        if state == "failed":
            return self._failed(model, raw, output)
        if state == "succeeded":
            return self.succeeded(model, task, output, http.as_dict(http.as_dict(answer).get("usage")))
        return Poll(state, raw)

    async def cancel(self, model: str, task: Task) -> bool:
        """Cancel a PENDING task; ``False`` when DashScope refuses (it already started) or fails."""
        try:
            await self.call("POST", f"/api/v1/tasks/{quote(task.id, safe='')}/cancel", model, self._headers())
        except errors.ProviderError:
            return False
        return True

    def succeeded(self, model: str, task: Task, output: dict[str, Any], usage: dict[str, Any]) -> Poll:
        raise NotImplementedError

    def _failed(self, model: str, raw: str, failure: dict[str, Any]) -> Poll:
        code = str(failure.get("code") or "")
        cls = next((c for key, c in _FAILURES.items() if key in code), errors.ProviderUnavailable)
        message = f"{code or raw}: {failure.get('message') or 'the task failed'}"
        return self.failed(model, raw, message, cls)

    def _refuse(self, model: str, why: str) -> errors.ProviderRejected:
        return errors.ProviderRejected(
            f"{self.context.name} {model}: {why}", provider=self.context.name, model=model
        )

    def _headers(self) -> dict[str, str]:
        return headers_with_key(self.context, "Authorization", "Bearer ")


class WanVideo(_DashScopeTask):
    """``video`` on Wan: text-to-video (``wan2.5-t2v-preview``, ``wan2.2-t2v-plus``) with a ``size``,
    image-to-video (``wan2.2-i2v-plus``) with ``input.img_url`` (a URL or data URL, as given)."""

    Options: ClassVar[type[BaseModel]] = WanVideoOptions
    PATH: ClassVar[str] = "/api/v1/services/aigc/video-generation/video-synthesis"

    async def submit(self, model: str, request: VideoInput, name: str | None = None) -> Task:
        options: WanVideoOptions = options_for(self.context, model, WanVideoOptions())
        longer = [d for d in sorted(options.durations_s) if d >= request.duration_s]
        duration_s = longer[0] if longer else max(options.durations_s)
        parameters: dict[str, Any] = {"duration": duration_s}
        data: dict[str, Any] = {"kind": "video", "duration_s": duration_s}
        payload: dict[str, Any] = {"prompt": request.prompt}
        if request.image is not None:
            payload["img_url"] = request.image
            parameters["resolution"] = request.resolution.upper()
        else:
            size = VIDEO_SIZES.get((request.aspect_ratio, request.resolution))
            if size is None:
                raise self._refuse(model, f"Wan has no {request.aspect_ratio} size at {request.resolution}")
            parameters["size"] = size
            data["width"], data["height"] = (int(side) for side in size.split("*"))
        if options.prompt_extend is not None:
            parameters["prompt_extend"] = options.prompt_extend
        return await self._submit(model, {"model": model, "input": payload, "parameters": parameters}, data)

    def succeeded(self, model: str, task: Task, output: dict[str, Any], usage: dict[str, Any]) -> Poll:
        url = output.get("video_url")
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise self.bad(model, "the succeeded task has no video_url", output)
        seconds = usage.get("video_duration")
        duration_s = float(seconds) if isinstance(seconds, int | float) else float(task.data["duration_s"])
        video = RemoteFile(
            url, "video/mp4", "mp4", task.data.get("width"), task.data.get("height"), duration_s
        )
        return Poll("succeeded", "SUCCEEDED", outputs=[video], usage=Usage(units=duration_s))


class WanImage(_DashScopeTask):
    """``image`` on Wan text-to-image (``wan2.2-t2i-flash``, ``wanx2.1-t2i-turbo``): up to 4 images,
    each side 512-1440 px; no input image."""

    Options: ClassVar[type[BaseModel]] = WanImageOptions
    PATH: ClassVar[str] = "/api/v1/services/aigc/text2image/image-synthesis"

    async def submit(self, model: str, request: ImageInput, name: str | None = None) -> Task:
        options: WanImageOptions = options_for(self.context, model, WanImageOptions())
        if request.image is not None:
            raise self._refuse(model, "Wan text-to-image takes no input image")
        if request.n > MAX_IMAGES:
            raise self._refuse(model, f"Wan makes at most {MAX_IMAGES} images per task, not {request.n}")
        width, height = request.dimensions()
        low, high = IMAGE_SIDE_PX
        if not (low <= width <= high and low <= height <= high):
            raise self._refuse(model, f"Wan image sides must be {low}-{high} px, not {request.size}")
        parameters: dict[str, Any] = {"size": f"{width}*{height}", "n": request.n}
        if options.prompt_extend is not None:
            parameters["prompt_extend"] = options.prompt_extend
        body = {"model": model, "input": {"prompt": request.prompt}, "parameters": parameters}
        return await self._submit(model, body, {"kind": "image", "width": width, "height": height})

    def succeeded(self, model: str, task: Task, output: dict[str, Any], usage: dict[str, Any]) -> Poll:
        results = [http.as_dict(r) for r in output.get("results") or []]
        urls = [r["url"] for r in results if isinstance(r.get("url"), str) and r["url"].startswith("http")]
        if not urls:
            # Every image failed on its own (e.g. moderated): the first failure says why.
            failure = next((r for r in results if r.get("code")), {"message": "the task made no image"})
            return self._failed(model, "SUCCEEDED", failure)
        # Wan picks the format (PNG today): the download's content type says which.
        images = [
            RemoteFile(url, width=task.data.get("width"), height=task.data.get("height")) for url in urls
        ]
        count = usage.get("image_count")
        units = float(count) if isinstance(count, int) else float(len(images))
        return Poll("succeeded", "SUCCEEDED", outputs=list(images), usage=Usage(units=units))
