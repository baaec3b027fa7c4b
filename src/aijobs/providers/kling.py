"""The ``kling`` kind: Kuaishou Kling video (``POST /v1/videos/{text2video|image2video}``, then
``GET /v1/videos/{the same path}/{task_id}``) at ``https://api-singapore.klingai.com`` by default
(mainland accounts set ``base_url`` to ``https://api-beijing.klingai.com``; keys do not cross regions).

Auth: Kling signs nothing with the key itself. The configured key is ``"ACCESS_KEY|SECRET_KEY"`` (the
two halves Kling's console shows), and every request carries a fresh HS256 JWT
``{iss: ACCESS_KEY, exp: now + 1800, nbf: now - 5}`` signed with the secret, as ``Authorization: Bearer``.

Errors come in Kling's envelope ``{code, message, request_id}``, sometimes with HTTP 200 and sometimes
with an HTTP status that undersells the code (an exhausted resource pack arrives as 429, which would
read as "retry soon"). The code decides: :data:`CODE_STATUS` turns it into the HTTP status it means,
and :func:`aijobs.providers.http.error_for` maps that as for any provider.

Kling lets the caller name a task: ``external_task_id`` (unique within the account), which the query
endpoint accepts in place of the task id (``GET /v1/videos/{path}/{external_task_id}``). Every submit
sends the job's id there, so a task whose submit answer was lost to a crash is found and adopted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import time
from typing import Any, ClassVar, Literal
from urllib.parse import quote

import httpx2
import orjson
from pydantic import BaseModel, ConfigDict

from aijobs import errors
from aijobs.providers import http
from aijobs.providers.base import Task, options_for
from aijobs.providers.tasks import Poll, TaskAdapter, TaskState, is_not_found
from aijobs.types.common import Media, RemoteFile, Usage
from aijobs.types.video import VideoInput

JWT_LIFETIME_S = 1800
JWT_LEEWAY_S = 5  # nbf a little in the past: Kling's clock and ours differ by a second or two
#: The clip lengths Kling renders; a request gets the shortest that holds what it asked for.
DURATIONS_S = (5, 10)
PATHS = ("text2video", "image2video")
#: Kling's service codes, as the HTTP status each amounts to (unknown codes keep the answer's status).
CODE_STATUS = {
    # 1000 auth failed, 1001 Authorization empty, 1002 invalid, 1003 not yet valid, 1004 expired.
    **dict.fromkeys((1000, 1001, 1002, 1003, 1004), 401),
    # 1100 account exception, 1103 no access to the resource, 1304 IP not in the allow-list.
    **dict.fromkeys((1100, 1103, 1304), 403),
    # 1101 account in arrears, 1102 resource pack used up or expired: billing, another provider may pay.
    1101: 402,
    1102: 402,
    # 1200 bad request, 1201 bad parameters, 1202 bad method, 1300 platform policy, 1301 content policy.
    **dict.fromkeys((1200, 1201, 1202, 1300, 1301), 400),
    1203: 404,  # the resource (model, task) does not exist
    1302: 429,  # requests too fast
    1303: 429,  # concurrency or QPS over the account's limit
    5000: 500,
    5001: 503,
    5002: 504,
}
#: Codes whose message must read as a content-policy refusal, whatever words Kling chose.
CONTENT_CODES = frozenset({1301})
STATES: dict[str, TaskState] = {
    "submitted": "queued",
    "processing": "running",
    "succeed": "succeeded",
    "failed": "failed",
}
#: A failed task's ``task_status_msg`` naming moderation ("Failure to pass the risk control system",
#: "contains sensitive information", …); any other failure is Kling's, which another provider may not share.
FILTERED_MESSAGE = re.compile(r"risk|sensitive|moderat|content security|violat|inappropriate", re.I)
_DATA_URL = re.compile(r"data:image/[\w.+-]+;base64,", re.I)


class KlingOptions(BaseModel):
    """Per-model options: ``mode`` ``std`` (720p, cheaper) or ``pro`` (1080p)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["std", "pro"] = "std"


def pick_duration_s(requested_s: int, allowed_s: tuple[int, ...]) -> int:
    """The shortest allowed length that holds ``requested_s``, else the longest there is."""
    return next((d for d in allowed_s if d >= requested_s), allowed_s[-1])


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def kling_jwt(access_key: str, secret_key: str, now_s: float) -> str:
    """An HS256 JWT ``{iss, exp, nbf}`` as Kling wants it (stdlib only: three base64 parts and an HMAC)."""
    header = _b64url(orjson.dumps({"alg": "HS256", "typ": "JWT"}))
    claims = {"iss": access_key, "exp": int(now_s) + JWT_LIFETIME_S, "nbf": int(now_s) - JWT_LEEWAY_S}
    signing_input = f"{header}.{_b64url(orjson.dumps(claims))}"
    signature = hmac.new(secret_key.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(signature)}"


class KlingVideo(TaskAdapter):
    """Text-to-video, or image-to-video when ``request.image`` is set (the first frame).

    ``duration`` goes as the string Kling wants (``"5"``/``"10"``), ``mode`` from the model's options.
    The image goes as a URL or as raw base64 (Kling refuses the ``data:`` prefix). Kling reports each
    video's ``duration`` (a string); usage is those seconds, else the length requested.
    """

    Options: ClassVar[type[BaseModel]] = KlingOptions
    BASE_URL = "https://api-singapore.klingai.com"
    names_tasks: ClassVar[bool] = True

    async def submit(self, model: str, request: VideoInput, name: str | None = None) -> Task:
        """Create the task (named ``name`` by ``external_task_id``); Kling answers
        ``{code: 0, data: {task_id, task_status, task_info: {external_task_id}}}``."""
        options: KlingOptions = options_for(self.context, model, KlingOptions())
        path, data = _path_of(request), self._data(request)
        body: dict[str, Any] = {
            "model_name": model,
            "prompt": request.prompt,
            "duration": str(data["duration_s"]),
            "mode": options.mode,
        }
        if request.image:  # its frame decides the shape: image2video takes no aspect_ratio
            body["image"] = self._image(model, request.image)
        else:
            body["aspect_ratio"] = request.aspect_ratio
        if name:
            body["external_task_id"] = name
        answer = await self._request("POST", f"/v1/videos/{path}", model, body, submit=True)
        task_id = http.as_dict(answer.get("data")).get("task_id")
        if not isinstance(task_id, str) or not task_id:
            raise self.bad(model, "the submit answer has no data.task_id", answer)
        return Task(task_id, data)

    async def find(self, model: str, request: VideoInput, name: str) -> Task | None:
        """The task created under ``external_task_id = name`` at the path ``request`` creates on;
        ``None`` when Kling knows none (1203, not found)."""
        path = _path_of(request)
        try:
            answer = await self._request("GET", f"/v1/videos/{path}/{quote(name, safe='')}", model)
        except errors.ProviderError as exc:
            if is_not_found(exc):
                return None
            raise
        record = http.as_dict(answer.get("data"))
        task_id = record.get("task_id")
        named = http.as_dict(record.get("task_info")).get("external_task_id")
        if not isinstance(task_id, str) or not task_id or named not in (None, "", name):
            raise self.bad(model, f"the task found as {name!r} is not one named so", answer)
        return Task(task_id, self._data(request))

    @staticmethod
    def _data(request: VideoInput) -> dict[str, Any]:
        """What polling needs: the create path, and the clip length asked for."""
        return {"path": _path_of(request), "duration_s": pick_duration_s(request.duration_s, DURATIONS_S)}

    async def poll(self, model: str, task: Task) -> Poll:
        """Query the task at the path it was created on; a 404 (code 1203) means Kling no longer has it."""
        path = task.data.get("path")
        path = path if path in PATHS else "text2video"
        try:
            data = await self._request("GET", f"/v1/videos/{path}/{quote(task.id, safe='')}", model)
        except errors.ProviderError as exc:
            if is_not_found(exc):
                return self.gone(model, task)
            raise
        record = http.as_dict(data.get("data"))
        status = str(record.get("task_status") or "")
        state = STATES.get(status)
        if state is None:
            raise self.bad(model, f"unknown task_status {status!r}", data)
        if state == "failed":
            message = str(record.get("task_status_msg") or "the task failed")
            cls = (
                errors.ProviderContentFiltered
                if FILTERED_MESSAGE.search(message)
                else errors.ProviderUnavailable
            )
            return self.failed(model, status, message, cls)
        if state != "succeeded":
            return Poll(state, status)
        return self._succeeded(model, task, status, record)

    def _succeeded(self, model: str, task: Task, status: str, record: dict[str, Any]) -> Poll:
        videos = http.as_dict(record.get("task_result")).get("videos")
        files: list[RemoteFile] = []
        for video in videos if isinstance(videos, list) else []:
            item = http.as_dict(video)
            url = item.get("url")
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise self.bad(model, "a video has no url", record)
            files.append(RemoteFile(url, "video/mp4", "mp4", duration_s=_seconds(item.get("duration"))))
        if not files:
            raise self.bad(model, "a succeeded task has no task_result.videos", record)
        requested_s = float(task.data.get("duration_s") or 0)
        units = sum(item.duration_s or requested_s for item in files)
        outputs: list[Media | RemoteFile] = list(files)
        return Poll("succeeded", status, progress=1.0, outputs=outputs, usage=Usage(units=units))

    def _image(self, model: str, image: str) -> str:
        """A URL as is; a ``data:`` URL as the bare base64 Kling wants."""
        if image.startswith(("http://", "https://")):
            return image
        match = _DATA_URL.match(image)
        if match is None:
            raise errors.ProviderRejected(
                f"{self.context.name} {model}: Kling takes an image URL or a base64 data: URL",
                provider=self.context.name, model=model,
            )  # fmt: skip
        return image[match.end() :]

    def _headers(self, model: str) -> dict[str, str]:
        access_key, _, secret_key = (self.context.api_key or "").partition("|")
        if not access_key or not secret_key:
            raise errors.ProviderAuth(
                f"{self.context.name} {model}: the Kling key must be configured as ACCESS_KEY|SECRET_KEY",
                provider=self.context.name, model=model,
            )  # fmt: skip
        token = kling_jwt(access_key, secret_key, time.time())
        return {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}

    async def _request(
        self, method: str, path: str, model: str, body: dict[str, Any] | None = None, *, submit: bool = False
    ) -> dict[str, Any]:
        """One call; the envelope's ``code`` decides success. Not :meth:`call`: an error's code must be
        read off the full body, whatever the HTTP status (``submit`` still makes a lost answer a
        SubmitUnknown)."""
        headers = self._headers(model)
        content = orjson.dumps(body) if body is not None else None
        url = self.base_url + path
        with http.transport_errors(self.context.name, model, submit=submit, url=url):
            response = await self.context.http.request(
                method, url, content=content, headers=headers, timeout=self.timeouts
            )
        try:
            data = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            data = None
        envelope = http.as_dict(data)
        code = envelope.get("code")
        if response.status_code >= 400 or code not in (0, "0", None):
            raise self._error(model, response, envelope)
        if not envelope:
            raise self.bad(model, "the answer is not a JSON object", response.text[:200])
        return envelope

    def _error(self, model: str, response: httpx2.Response, envelope: dict[str, Any]) -> errors.ProviderError:
        status = response.status_code if response.status_code >= 400 else 500
        body = response.content
        try:
            code = int(envelope["code"])
        except (KeyError, TypeError, ValueError):
            code = None
        if code is not None:
            status = CODE_STATUS.get(code, status)
            message = str(envelope.get("message") or "")
            if code in CONTENT_CODES:
                message = f"content policy violation: {message}"
            body = orjson.dumps({"code": code, "message": message})
        return http.error_for(status, body, response.headers, self.context.name, model, self.context.api_key)


def _path_of(request: VideoInput) -> str:
    """The create (and query) path: image2video with a first frame, else text2video."""
    return "image2video" if request.image else "text2video"


def _seconds(value: Any) -> float | None:
    """Kling's ``duration`` ("5.1"), as seconds; ``None`` when absent or unreadable."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None
