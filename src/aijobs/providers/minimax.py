"""MiniMax media: T2A v2 speech (synchronous; the audio comes back hex-encoded) and Hailuo video
(long-running: create → query → ``files/retrieve`` for the download URL).

Both speak MiniMax's native API at ``https://api.minimax.io`` (mainland accounts set ``base_url`` to
``https://api.minimaxi.com``) with a Bearer key. MiniMax answers most errors with HTTP 200 and a non-zero
``base_resp.status_code``; :func:`aijobs.providers.http.embedded_error` knows those codes (1002 rate
limit, 1004/2049 bad key, 1008 no balance, 1026/1027 sensitive input/output, 2013 bad parameters).
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import urlencode

import httpx2
import orjson
from pydantic import BaseModel

from aijobs import errors
from aijobs.providers import http
from aijobs.providers.base import MediaResult, NoOptions, ProviderContext, Task
from aijobs.providers.tasks import Poll, TaskAdapter, TaskState
from aijobs.types.common import Media, RemoteFile, Usage
from aijobs.types.speech import SpeechInput
from aijobs.types.video import VideoInput

BASE_URL = "https://api.minimax.io"

#: The formats T2A produces, with their content types (it has no opus or aac).
AUDIO_TYPES = {"mp3": "audio/mpeg", "wav": "audio/wav", "flac": "audio/flac", "pcm": "audio/pcm"}
SAMPLE_RATE_HZ = 32_000
BITRATE_BPS = 128_000
#: T2A's documented ``voice_setting.speed`` range.
MIN_SPEED, MAX_SPEED = 0.5, 2.0

#: Hailuo renders 6 or 10 s clips; a request gets the shortest that holds what it asked for.
VIDEO_DURATIONS_S = (6, 10)
#: Our resolution → Hailuo's (its 720p-class output is 768P, its 480p-class 512P).
VIDEO_RESOLUTIONS = {"480p": "512P", "720p": "768P", "1080p": "1080P"}
RUNNING_STATES: dict[str, TaskState] = {"Preparing": "queued", "Queueing": "queued", "Processing": "running"}
#: ``base_resp`` codes of a failed task that mean moderation refused its input (1026) or output (1027).
FILTERED_CODES = frozenset({1026, 1027})
#: MiniMax answers a query for a task id it does not know with "invalid params": the query's only
#: parameter is the task id, so for a query this code means the task is gone.
UNKNOWN_TASK_CODE = 2013


def base_url_of(context: ProviderContext) -> str:
    """The configured ``base_url``, else MiniMax's global host."""
    return (context.config.base_url or BASE_URL).rstrip("/")


def status_code(data: dict[str, Any]) -> int:
    """A MiniMax answer's ``base_resp.status_code`` (0, success, when absent or unreadable)."""
    try:
        return int(http.as_dict(data.get("base_resp")).get("status_code") or 0)
    except (TypeError, ValueError):
        return 0


class MiniMaxSpeech:
    """``POST /v1/t2a_v2``, not streamed, ``output_format: "hex"``: one audio file per request.

    Usage is the audio's length in seconds, from ``extra_info.audio_length`` (milliseconds).
    """

    Options: ClassVar[type[BaseModel]] = NoOptions

    def __init__(self, context: ProviderContext) -> None:
        self.context = context
        self.url = base_url_of(context) + "/v1/t2a_v2"
        self.headers = http.json_headers(context)
        self.timeouts = http.timeouts_for(context)

    async def run(self, model: str, request: SpeechInput) -> MediaResult:
        """Synthesise ``request.text``; refuse what T2A cannot do before sending anything."""
        content_type = AUDIO_TYPES.get(request.format)
        if content_type is None:
            raise self._refuse(model, f"T2A has no {request.format} output (mp3, wav, flac or pcm only)")
        if not MIN_SPEED <= request.speed <= MAX_SPEED:
            raise self._refuse(model, f"T2A speaks at speed {MIN_SPEED} to {MAX_SPEED}, not {request.speed}")
        body = {
            "model": model,
            "text": request.text,
            "stream": False,
            "voice_setting": {"voice_id": request.voice, "speed": request.speed, "vol": 1, "pitch": 0},
            "audio_setting": {
                "sample_rate": SAMPLE_RATE_HZ,
                "bitrate": BITRATE_BPS,
                "format": request.format,
                "channel": 1,
            },
            "output_format": "hex",
        }
        data = await http.post_json(
            self.context, self.url, body, model=model, headers=self.headers, timeouts=self.timeouts
        )
        try:
            audio = bytes.fromhex(data["data"]["audio"])
            length_ms = float(data["extra_info"]["audio_length"])
        except (KeyError, TypeError, ValueError):
            raise errors.ProviderBadResponse(
                f"{self.context.name} {model}: the answer has no hex audio and length",
                provider=self.context.name, model=model, status=200, body=str(data)[:500],
            ) from None  # fmt: skip
        if not audio:
            raise errors.ProviderBadResponse(
                f"{self.context.name} {model}: the answer's audio is empty", provider=self.context.name,
                model=model, status=200,
            )  # fmt: skip
        seconds = length_ms / 1000
        media = Media(audio, content_type, request.format, duration_s=seconds)
        return MediaResult(items=[media], model=model, usage=Usage(units=seconds))

    def _refuse(self, model: str, why: str) -> errors.ProviderRejected:
        return errors.ProviderRejected(
            f"{self.context.name} {model}: {why}", provider=self.context.name, model=model
        )


class MiniMaxVideo(TaskAdapter):
    """Hailuo video: ``POST /v1/video_generation`` → ``GET /v1/query/video_generation`` until
    ``Success`` → ``GET /v1/files/retrieve`` for the file's ``download_url`` (a signed URL, hours long).

    MiniMax has no cancel API. Usage is the clip's length in seconds (it bills per clip of 6 or 10 s).
    """

    BASE_URL = BASE_URL

    def __init__(self, context: ProviderContext) -> None:
        super().__init__(context)
        self.headers = http.json_headers(context)

    async def submit(self, model: str, request: VideoInput, name: str | None = None) -> Task:
        """Create the task; ``task.data`` keeps the clip length MiniMax was asked for."""
        duration_s = next((d for d in VIDEO_DURATIONS_S if d >= request.duration_s), None)
        if duration_s is None:
            raise errors.ProviderRejected(
                f"{self.context.name} {model}: Hailuo renders at most {VIDEO_DURATIONS_S[-1]} s, "
                f"not {request.duration_s} s",
                provider=self.context.name, model=model,
            )  # fmt: skip
        body: dict[str, Any] = {
            "model": model,
            "prompt": request.prompt,
            "duration": duration_s,
            "resolution": VIDEO_RESOLUTIONS[request.resolution],
        }
        if request.image:
            body["first_frame_image"] = request.image
        data = await self.call("POST", "/v1/video_generation", model, self.headers, body, submit=True)
        task_id = http.as_dict(data).get("task_id")
        if not isinstance(task_id, str | int) or isinstance(task_id, bool) or not str(task_id):
            raise self.bad(model, "the submit answer has no task_id", data)
        return Task(str(task_id), {"duration_s": duration_s})

    async def poll(self, model: str, task: Task) -> Poll:
        """Query the task; on ``Success`` also retrieve its file (the third step) for the URL."""
        data, response = await self._query(
            f"/v1/query/video_generation?{urlencode({'task_id': task.id})}", model
        )
        status = str(data.get("status") or "")
        code = status_code(data)
        if status == "Fail":
            return self._failure(model, code, data, response)
        if code == UNKNOWN_TASK_CODE:
            return self.gone(model, task)
        if code:
            raise self._error(http.embedded_error(data) or 500, response, model)
        if status in RUNNING_STATES:
            return Poll(RUNNING_STATES[status], status)
        if status != "Success":
            raise self.bad(model, f"unknown task status {status!r}", data)
        return await self._succeeded(model, task, data)

    async def _succeeded(self, model: str, task: Task, data: dict[str, Any]) -> Poll:
        file_id = data.get("file_id")
        if file_id in (None, "", 0):
            raise self.bad(model, "a successful task has no file_id", data)
        retrieved = await self.call(
            "GET", f"/v1/files/retrieve?{urlencode({'file_id': file_id})}", model, self.headers
        )
        url = http.as_dict(http.as_dict(retrieved).get("file")).get("download_url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise self.bad(model, "the retrieved file has no download_url", retrieved)
        duration_s = task.data.get("duration_s")
        output = RemoteFile(
            url, "video/mp4", "mp4", width=_pixels(data.get("video_width")),
            height=_pixels(data.get("video_height")), duration_s=duration_s,
        )  # fmt: skip
        return Poll(
            "succeeded", "Success", progress=1.0, outputs=[output], usage=Usage(units=duration_s or 0)
        )

    def _failure(self, model: str, code: int, data: dict[str, Any], response: httpx2.Response) -> Poll:
        """A ``Fail``ed task: moderation when its code says so, else what its code means, else an outage."""
        message = str(http.as_dict(data.get("base_resp")).get("status_msg") or "the task failed")
        if code in FILTERED_CODES:
            return self.failed(model, "Fail", f"{code} {message}", errors.ProviderContentFiltered)
        if code:
            return Poll(
                "failed", "Fail", error=self._error(http.embedded_error(data) or 500, response, model)
            )
        return self.failed(model, "Fail", message, errors.ProviderUnavailable)

    async def _query(self, path: str, model: str) -> tuple[dict[str, Any], httpx2.Response]:
        """GET ``path`` and decode it, leaving a 200 body's ``base_resp`` error to the caller: a failed
        task's record carries one, and that is the task's outcome, not a failed poll."""
        url = self.base_url + path
        with http.transport_errors(self.context.name, model, url=url):
            response = await self.context.http.get(url, headers=self.headers, timeout=self.timeouts)
        if response.status_code >= 400:
            raise self._error(response.status_code, response, model)
        try:
            data = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise self.bad(model, "the answer is not JSON", response.text[:200]) from None
        if not isinstance(data, dict):
            raise self.bad(model, "the answer is not a JSON object", data)
        return data, response

    def _error(self, status: int, response: httpx2.Response, model: str) -> errors.ProviderError:
        return http.error_for(
            status, response.content, response.headers, self.context.name, model, self.context.api_key
        )


def _pixels(value: Any) -> int | None:
    """A reported width or height; MiniMax sends 0 until the video exists."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
