"""The ``fal`` kind: any model on fal's queue, the model id being the target model (``fal-ai/flux/dev``,
``fal-ai/kling-video/v2.1/standard/text-to-video``), key as ``Authorization: Key …``.

::

    POST https://queue.fal.run/{model_id}  → {request_id, status_url, response_url, cancel_url}
    GET  status_url    → {status: IN_QUEUE | IN_PROGRESS | COMPLETED, queue_position?, logs?}
    GET  response_url  → the model's output, or the request's failure as an error status
    PUT  cancel_url    → 202 CANCELLATION_REQUESTED | 400 ALREADY_COMPLETED

The three URLs are used as fal gives them (they name the model's app, not its full path).

fal has two error shapes: a model's ``{"detail": [{loc, msg, type}]}`` (``type`` ``content_policy_violation``
for moderation) and the platform's ``{"detail": "...", "error_type": "request_timeout"}`` (also in the
``X-Fal-Error-Type`` header). Both are flattened to one message for :func:`aijobs.providers.http.error_for`.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import httpx2
import orjson

from aijobs import errors
from aijobs.providers import http
from aijobs.providers.base import ProviderContext, Task
from aijobs.providers.tasks import Poll, TaskAdapter, TaskState, headers_with_key
from aijobs.types.common import Media, RemoteFile, Usage
from aijobs.types.image import ImageInput
from aijobs.types.video import VideoInput

EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "video/mp4": "mp4"}
EXTENSIONS |= {"video/webm": "webm", "video/quicktime": "mov"}
IMAGE_FORMATS = frozenset({"png", "jpeg"})
#: The clip lengths fal's video models take (as strings); a request gets the shortest that holds it.
DURATIONS_S = (5, 10)
RUNNING_STATES: dict[str, TaskState] = {"IN_QUEUE": "queued", "IN_PROGRESS": "running"}
URL_FIELDS = ("status_url", "response_url", "cancel_url")
#: A result fetch answered with one of these and no ``error_type`` hit a passing problem between us and
#: fal, not the request's outcome: the poll fails and is tried again.
PASSING_STATUSES = frozenset({429, 502, 503, 504})
#: fal no longer knows the request (it expired, or never existed).
GONE_STATUSES = frozenset({404, 410})
#: Cancel answers that mean "nothing to cancel": finished already (400), or unknown (404/410).
NOT_CANCELABLE = frozenset({400, 404, 410})
CANCELED_ERROR = re.compile(r"cancel", re.IGNORECASE)


class _FalQueue(TaskAdapter):
    """Submit, poll and cancel on fal's queue; subclasses shape the input and read the output."""

    BASE_URL = "https://queue.fal.run"

    def __init__(self, context: ProviderContext) -> None:
        super().__init__(context)
        self.headers = headers_with_key(context, "Authorization", "Key ")

    def prepare(self, model: str, request: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """The model input, and what polling needs to remember about the request."""
        raise NotImplementedError

    def finish(self, model: str, task: Task, raw_status: str, output: dict[str, Any]) -> Poll:
        """The poll of a completed request, from the model's output."""
        raise NotImplementedError

    async def submit(self, model: str, request: Any, name: str | None = None) -> Task:
        """Queue the request; fal answers its id and the URLs to follow it by."""
        body, remembered = self.prepare(model, request)
        url = f"{self.base_url}/{quote(model, safe='/')}"
        data = self._json(model, await self._send("POST", url, model, body, submit=True))
        request_id = data.get("request_id")
        if not isinstance(request_id, str) or not request_id:
            raise self.bad(model, "the submit answer has no request_id", data)
        urls = {name: data.get(name) for name in URL_FIELDS}
        for name, value in urls.items():
            if not isinstance(value, str) or not value.startswith(("http://", "https://")):
                raise self.bad(model, f"the submit answer has no {name}", data)
        return Task(request_id, {**urls, **remembered})

    async def poll(self, model: str, task: Task) -> Poll:
        """Read the status; once COMPLETED, fetch the output (or the failure) from ``response_url``."""
        response = await self._send("GET", str(task.data["status_url"]), model)
        if response.status_code in GONE_STATUSES:
            return self.gone(model, task)
        status = self._json(model, response)
        word = str(status.get("status") or "")
        if word in RUNNING_STATES:
            return Poll(RUNNING_STATES[word], word)
        if word != "COMPLETED":
            raise self.bad(model, f"unknown request status {word!r}", status)
        response = await self._send("GET", str(task.data["response_url"]), model)
        if response.status_code in GONE_STATUSES:
            return self.gone(model, task)
        if response.status_code < 400:
            return self.finish(model, task, word, self._json(model, response))
        error = self._error(model, response)
        if response.status_code in PASSING_STATUSES and not _error_type(response):
            raise error
        if _canceled(response):
            return Poll("canceled", word)
        return Poll("failed", word, error=error)

    async def cancel(self, model: str, task: Task) -> bool:
        """``PUT cancel_url``: 202 when fal dropped or signalled the request; 400 when it already ended."""
        response = await self._send("PUT", str(task.data["cancel_url"]), model)
        if response.status_code in NOT_CANCELABLE:
            return False
        self._json(model, response)
        return True

    async def _send(
        self, method: str, url: str, model: str, body: dict[str, Any] | None = None, *, submit: bool = False
    ) -> httpx2.Response:
        """One request, transport failures mapped (``submit``: a lost answer is a SubmitUnknown)."""
        content = orjson.dumps(body) if body is not None else None
        with http.transport_errors(self.context.name, model, submit=submit, url=url):
            return await self.context.http.request(
                method, url, content=content, headers=self.headers, timeout=self.timeouts
            )

    def _json(self, model: str, response: httpx2.Response) -> dict[str, Any]:
        """A 2xx answer's JSON object; an error status raised as its error."""
        if response.status_code >= 400:
            raise self._error(model, response)
        try:
            data = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise self.bad(model, "the answer is not JSON", response.text[:200]) from None
        if not isinstance(data, dict):
            raise self.bad(model, "the answer is not a JSON object", data)
        return data

    def _error(self, model: str, response: httpx2.Response) -> errors.ProviderError:
        """The error an error answer means, its ``detail`` (a string, or a list of typed errors) flattened."""
        data = _body(response)
        detail = data.get("detail")
        if isinstance(detail, list):
            items = [http.as_dict(item) for item in detail]
            message = "; ".join(f"{i.get('type') or 'error'}: {i.get('msg') or ''}".strip() for i in items)
        else:
            message = str(detail or data.get("error") or data.get("status") or "")
        kind = _error_type(response)
        body = (
            orjson.dumps({"detail": f"{kind}: {message}" if kind else message}) if data else response.content
        )
        return http.error_for(
            response.status_code, body, response.headers, self.context.name, model, self.context.api_key
        )

    def _refuse(self, model: str, why: str) -> errors.ProviderRejected:
        return errors.ProviderRejected(
            f"{self.context.name} {model}: {why}", provider=self.context.name, model=model
        )


class FalImage(_FalQueue):
    """Image models (``fal-ai/flux/dev``, …): ``{prompt, image_size: {width, height}, num_images,
    output_format, image_url?}`` in; ``{images: [{url, width, height, content_type}], has_nsfw_concepts}``
    out. Images fal's checker flagged come back black: they are dropped, and a request whose every image
    was flagged failed content moderation. Usage is the images kept."""

    def prepare(self, model: str, request: ImageInput) -> tuple[dict[str, Any], dict[str, Any]]:
        if request.output_format not in IMAGE_FORMATS:
            raise self._refuse(model, f"fal's image models render png or jpeg, not {request.output_format}")
        width, height = request.dimensions()
        body: dict[str, Any] = {
            "prompt": request.prompt,
            "image_size": {"width": width, "height": height},
            "num_images": request.n,
            "output_format": request.output_format,
        }
        if request.image:
            body["image_url"] = request.image  # fal takes data: URIs as well as URLs
        return body, {}

    def finish(self, model: str, task: Task, raw_status: str, output: dict[str, Any]) -> Poll:
        images = output.get("images")
        flags = output.get("has_nsfw_concepts")
        flagged = flags if isinstance(flags, list) else []
        kept: list[Media | RemoteFile] = []
        for index, image in enumerate(images if isinstance(images, list) else []):
            if index < len(flagged) and flagged[index] is True:
                continue
            kept.append(self._file(model, http.as_dict(image), output))
        if not kept and flagged and all(flag is True for flag in flagged):
            return self.failed(
                model,
                raw_status,
                "every image was flagged by fal's safety checker",
                errors.ProviderContentFiltered,
            )
        if not kept:
            raise self.bad(model, "a completed request has no images", output)
        return Poll("succeeded", raw_status, progress=1.0, outputs=kept, usage=Usage(units=len(kept)))

    def _file(self, model: str, image: dict[str, Any], output: dict[str, Any]) -> RemoteFile:
        url = image.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise self.bad(model, "an image has no url", output)
        content_type = image.get("content_type") if isinstance(image.get("content_type"), str) else None
        return RemoteFile(
            url, content_type, EXTENSIONS.get(content_type or ""), width=_pixels(image.get("width")),
            height=_pixels(image.get("height")),
        )  # fmt: skip


class FalVideo(_FalQueue):
    """Video models (``fal-ai/kling-video/…``, …): ``{prompt, duration: "5"|"10", aspect_ratio}`` in, or
    ``image_url`` instead of ``aspect_ratio`` for image-to-video (the frame decides the shape);
    ``{video: {url, content_type, file_name, file_size}}`` out. fal does not report the clip's length:
    usage is the length requested."""

    def prepare(self, model: str, request: VideoInput) -> tuple[dict[str, Any], dict[str, Any]]:
        duration_s = next((d for d in DURATIONS_S if d >= request.duration_s), DURATIONS_S[-1])
        body: dict[str, Any] = {"prompt": request.prompt, "duration": str(duration_s)}
        if request.image:
            body["image_url"] = request.image
        else:
            body["aspect_ratio"] = request.aspect_ratio
        return body, {"duration_s": duration_s}

    def finish(self, model: str, task: Task, raw_status: str, output: dict[str, Any]) -> Poll:
        video = http.as_dict(output.get("video"))
        url = video.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise self.bad(model, "a completed request has no video.url", output)
        content_type = (
            video.get("content_type") if isinstance(video.get("content_type"), str) else "video/mp4"
        )
        duration_s = float(task.data.get("duration_s") or 0) or None
        outputs: list[Media | RemoteFile] = [
            RemoteFile(url, content_type, EXTENSIONS.get(str(content_type)), duration_s=duration_s)
        ]
        return Poll(
            "succeeded", raw_status, progress=1.0, outputs=outputs, usage=Usage(units=duration_s or 0.0)
        )


def _body(response: httpx2.Response) -> dict[str, Any]:
    """An error answer's JSON object; empty when it has none."""
    try:
        return http.as_dict(orjson.loads(response.content))
    except orjson.JSONDecodeError:
        return {}


def _error_type(response: httpx2.Response) -> str:
    """fal's machine-readable failure category, from the header or the body."""
    return response.headers.get("x-fal-error-type", "") or str(_body(response).get("error_type") or "")


def _canceled(response: httpx2.Response) -> bool:
    """Whether a result's error says the request was canceled (by its type, or fal's own words: a
    model error's items can echo the prompt, so only a plain ``detail`` string is read)."""
    detail = _body(response).get("detail")
    said = f"{_error_type(response)} {detail if isinstance(detail, str) else ''}"
    return CANCELED_ERROR.search(said) is not None


def _pixels(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
