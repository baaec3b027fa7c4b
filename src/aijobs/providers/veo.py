"""Google Veo on the Gemini API: a long-running ``video`` task (key in ``x-goog-api-key``).

::

    submit  POST {base_url}/v1beta/models/{model}:predictLongRunning
            {instances: [{prompt, image?: {bytesBase64Encoded, mimeType}}],
             parameters: {aspectRatio, durationSeconds, resolution, personGeneration?}}
            → {name: "models/{model}/operations/{id}"}   (or "operations/{id}")
    poll    GET {base_url}/v1beta/{name}
            → {name, done?, error?: {code, message, status},
               response?: {generateVideoResponse: {generatedSamples: [{video: {uri}}],
                                                   raiMediaFilteredCount?, raiMediaFilteredReasons?}}}
    fetch   GET {uri}  (``…/v1beta/files/{id}:download?alt=media``), which needs the key too

Veo reports no queue position or progress: an operation is running until ``done``. Its raw status
is therefore ours to name: ``running``, ``done`` or ``error``. There is no cancel on the Gemini API.

Translation: aspect ratios 16:9 and 9:16 only (others are refused before sending); 480p asks for
720p, Veo's smallest; durations round up to the next one the model allows (4, 6, 8 s by default),
and 1080p is always 8 s because Veo renders 1080p only at that length. A first frame must be inline
bytes, so only ``data:`` URLs are accepted (the worker inlines user URLs before routing).
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import orjson
from pydantic import BaseModel, ConfigDict, Field

from aijobs import errors
from aijobs.providers import http
from aijobs.providers.base import Task, options_for
from aijobs.providers.tasks import Poll, TaskAdapter, headers_with_key, is_not_found
from aijobs.types.common import RemoteFile, Usage
from aijobs.types.video import VideoInput

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
ASPECT_RATIOS = frozenset({"16:9", "9:16"})
#: Our resolution → Veo's; Veo renders nothing smaller than 720p.
RESOLUTIONS = {"480p": "720p", "720p": "720p", "1080p": "1080p"}
FULL_HD_DURATION_S = 8  # Veo renders 1080p only at 8 s
#: An operation's name: ``models/{model}/operations/{id}`` as documented, or the bare ``operations/{id}``
#: of Google's generic Operations service; either is polled at ``/v1beta/{name}``.
_OPERATION = re.compile(r"(models/[A-Za-z0-9._-]+/)?operations/[A-Za-z0-9._-]+")
_DATA_URL = re.compile(r"data:(image/[A-Za-z0-9.+-]+);base64,(.+)", re.DOTALL)
#: Google's canonical error codes (``error.status``) for a failed operation → our error.
_FAILURES: dict[str, type[errors.ProviderError]] = {
    "INVALID_ARGUMENT": errors.ProviderRejected,
    "FAILED_PRECONDITION": errors.ProviderRejected,
    "OUT_OF_RANGE": errors.ProviderRejected,
    "RESOURCE_EXHAUSTED": errors.ProviderRateLimited,
    "PERMISSION_DENIED": errors.ProviderAuth,
    "UNAUTHENTICATED": errors.ProviderAuth,
    "DEADLINE_EXCEEDED": errors.ProviderTimeout,
}
#: ``error.code`` (a google.rpc.Code number) → its name, for errors that carry no ``status``.
_CODE_NAMES = {3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED"}
_CODE_NAMES |= {9: "FAILED_PRECONDITION", 11: "OUT_OF_RANGE", 13: "INTERNAL", 14: "UNAVAILABLE"}
_CODE_NAMES |= {16: "UNAUTHENTICATED"}


class VeoOptions(BaseModel):
    """Per-model settings: the durations the model renders, and Veo's ``personGeneration``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    durations_s: tuple[int, ...] = Field(default=(4, 6, 8), min_length=1)
    person_generation: Literal["allow_all", "allow_adult", "dont_allow"] | None = None


class VeoVideo(TaskAdapter):
    """``video`` on Veo (``veo-3.1-generate-preview``, ``veo-3.0-fast-generate-001``, …)."""

    Options: ClassVar[type[BaseModel]] = VeoOptions
    BASE_URL: ClassVar[str] = DEFAULT_BASE_URL

    async def submit(self, model: str, request: VideoInput, name: str | None = None) -> Task:
        options: VeoOptions = options_for(self.context, model, VeoOptions())
        if request.aspect_ratio not in ASPECT_RATIOS:
            raise self._refuse(model, f"Veo renders 16:9 or 9:16 only, not {request.aspect_ratio}")
        resolution = RESOLUTIONS[request.resolution]
        duration_s = self._duration_s(request.duration_s, resolution, options.durations_s)
        instance: dict[str, Any] = {"prompt": request.prompt}
        if request.image is not None:
            instance["image"] = self._inline_image(model, request.image)
        parameters: dict[str, Any] = {
            "aspectRatio": request.aspect_ratio,
            "durationSeconds": duration_s,
            "resolution": resolution,
        }
        if options.person_generation is not None:
            parameters["personGeneration"] = options.person_generation
        data = await self.call(
            "POST", f"/v1beta/models/{model}:predictLongRunning", model, self._headers(),
            {"instances": [instance], "parameters": parameters}, submit=True,
        )  # fmt: skip
        name = http.as_dict(data).get("name")
        if not isinstance(name, str) or not _OPERATION.fullmatch(name):
            raise self.bad(model, "the answer names no operation", data)
        width, height = request.model_copy(update={"resolution": resolution}).dimensions()
        return Task(
            name.rsplit("/", 1)[-1],
            {"name": name, "kind": "video", "duration_s": duration_s, "width": width, "height": height},
        )

    async def poll(self, model: str, task: Task) -> Poll:
        try:
            data = await self._operation(model, str(task.data["name"]))
        except errors.ProviderError as exc:
            if is_not_found(exc):
                return self.gone(model, task)
            raise
        operation = http.as_dict(data)
        if not operation.get("done"):
            return Poll("running", "running")
        error = http.as_dict(operation.get("error"))
        if error:
            return self._failed(model, error)
        answer = http.as_dict(http.as_dict(operation.get("response")).get("generateVideoResponse"))
        samples = answer.get("generatedSamples") if isinstance(answer.get("generatedSamples"), list) else []
        if not samples:
            filtered = answer.get("raiMediaFilteredCount") or 0
            if isinstance(filtered, int) and filtered > 0:
                reasons = "; ".join(str(r) for r in answer.get("raiMediaFilteredReasons") or [])
                message = f"Veo's safety filters removed the video{': ' + reasons if reasons else ''}"
                return self.failed(model, "done", message, errors.ProviderContentFiltered)
            raise self.bad(model, "the finished operation has no video", data)
        outputs = [self._output(model, sample, task, data) for sample in samples]
        seconds = float(task.data["duration_s"]) * len(outputs)  # Veo reports no usage: bill what we asked
        return Poll("succeeded", "done", outputs=list(outputs), usage=Usage(units=seconds))

    async def _operation(self, model: str, name: str) -> Any:
        """GET the operation. Not through ``call``: an operation that ended in error says so in a 200's
        ``error``, which ``request_json`` would raise as a failed call instead of a failed task."""
        provider, key = self.context.name, self.context.api_key
        url = f"{self.base_url}/v1beta/{name}"
        with http.transport_errors(provider, model, url=url):
            response = await self.context.http.get(url, headers=self._headers(), timeout=self.timeouts)
        status = response.status_code
        if status >= 400:
            raise http.error_for(status, response.content, response.headers, provider, model, key)
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise self.bad(model, f"the operation answered {status} with a body that is not JSON") from None

    def _output(self, model: str, sample: Any, task: Task, data: Any) -> RemoteFile:
        uri = http.as_dict(http.as_dict(sample).get("video")).get("uri")
        if not isinstance(uri, str) or not uri.startswith(("https://", "http://")):
            raise self.bad(model, "a generated sample has no video uri", data)
        return RemoteFile(
            uri, "video/mp4", "mp4", task.data.get("width"), task.data.get("height"),
            float(task.data["duration_s"]), headers=self._download_headers(uri),
        )  # fmt: skip

    def _download_headers(self, uri: str) -> tuple[tuple[str, str], ...]:
        """The key for downloading ``uri``, only when it is on the API's own host: a link elsewhere
        (a tampered or redirected answer) must never receive our key."""
        if not self.context.api_key:
            return ()
        ours, theirs = urlsplit(self.base_url), urlsplit(uri)
        if (ours.scheme, ours.netloc) != (theirs.scheme, theirs.netloc):
            return ()
        return (("x-goog-api-key", self.context.api_key),)

    def _failed(self, model: str, error: dict[str, Any]) -> Poll:
        code = error.get("code")
        status = str(
            error.get("status") or (_CODE_NAMES.get(code, "UNKNOWN") if isinstance(code, int) else "UNKNOWN")
        )
        cls = _FAILURES.get(status, errors.ProviderUnavailable)
        message = f"{status}: {error.get('message') or 'the operation failed'}"
        return self.failed(model, "error", message, cls)

    def _inline_image(self, model: str, image: str) -> dict[str, str]:
        match = _DATA_URL.fullmatch(image)
        if match is None:
            raise self._refuse(
                model, "Veo needs the image inline; pass a data:image/...;base64, URL, not a link"
            )
        return {"bytesBase64Encoded": match.group(2), "mimeType": match.group(1)}

    @staticmethod
    def _duration_s(requested_s: int, resolution: str, allowed_s: tuple[int, ...]) -> int:
        if resolution == "1080p":
            return FULL_HD_DURATION_S
        longer = [d for d in sorted(allowed_s) if d >= requested_s]
        return longer[0] if longer else max(allowed_s)

    def _refuse(self, model: str, why: str) -> errors.ProviderRejected:
        return errors.ProviderRejected(
            f"{self.context.name} {model}: {why}", provider=self.context.name, model=model
        )

    def _headers(self) -> dict[str, str]:
        return headers_with_key(self.context, "x-goog-api-key")
