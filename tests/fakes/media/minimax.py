"""TEST FAKE: MiniMax's T2A v2 speech and Hailuo video endpoints (mounted under ``/minimax``).

MiniMax's own conventions, kept here: errors come back as HTTP 200 with a non-zero
``base_resp.status_code`` (1002 rate limit, 1004 bad key, 1008 no balance, 1013 internal error,
1026/1027 sensitive input/output, 2013 invalid parameters), not as HTTP statuses; T2A returns the audio
hex-encoded; video is create → query → ``files/retrieve``. Injected faults become those codes
(429 → 1002, 401/403 → 1004, 402 → 1008, 504 → 1001, other 5xx → 1013, other 4xx → 2013), except 502/503,
which the load balancer in front of MiniMax answers itself with a plain HTTP error.

Choices where the docs are silent: a query for a task id MiniMax does not know (never created, or
expired) answers 2013 "invalid params"; a moderated task ends ``Fail`` with base_resp 1027; a
generically failed one ends ``Fail`` with base_resp 0. ``file_id`` is a number, as MiniMax sends it.

Fake limitations: T2A renders the simulator's tone-per-word voice at its own sample rate (reported
truthfully in ``extra_info``); ``mp3`` and ``flac`` get the same WAV bytes labelled as asked; ``stream:
true`` and ``output_format: "url"`` are refused with 2013. Unknown body fields are refused with 2013
(MiniMax ignores them) so that a misspelt field fails loudly.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from tests.fakes.media.farm import FakeTask, Farm, json_response, output_bytes

from aijobs.providers import sim_media

PROVIDER = "minimax"
SPEECH_MODELS = frozenset(
    f"speech-{version}-{tier}" for version in ("2.8", "2.6", "02", "01") for tier in ("hd", "turbo")
)
VIDEO_MODELS = frozenset(
    {"MiniMax-Hailuo-2.3", "MiniMax-Hailuo-2.3-Fast", "MiniMax-Hailuo-02", "T2V-01", "T2V-01-Director"}
    | {"I2V-01", "I2V-01-Director", "I2V-01-live", "S2V-01"}
)
#: Models that animate an image and need ``first_frame_image``.
IMAGE_MODELS = frozenset({"MiniMax-Hailuo-2.3-Fast", "I2V-01", "I2V-01-Director", "I2V-01-live"})
VIDEO_FIELDS = frozenset(
    {"model", "prompt", "prompt_optimizer", "fast_pretreatment", "duration", "resolution"}
    | {"first_frame_image", "last_frame_image", "subject_reference", "callback_url", "aigc_watermark"}
)
SPEECH_FIELDS = frozenset(
    {"model", "text", "stream", "voice_setting", "audio_setting", "language_boost", "output_format"}
    | {"pronunciation_dict", "timber_weights", "voice_modify", "subtitle_enable"}
)
FRAME_SIZE_PX = {"512P": (910, 512), "720P": (1280, 720), "768P": (1366, 768), "1080P": (1920, 1080)}
SAMPLE_RATES_HZ = frozenset({8000, 16000, 22050, 24000, 32000, 44100})
BITRATES_BPS = frozenset({32000, 64000, 128000, 256000})
MAX_TEXT_CHARS = 10_000
MAX_PROMPT_CHARS = 2_000
IMAGE_REF = re.compile(r"^(https?://|data:image/)")

FAULT_CODES = {429: 1002, 401: 1004, 403: 1004, 402: 1008, 504: 1001}
MESSAGES = {
    1001: "request timeout",
    1002: "rate limit exceeded(RPM)",
    1004: "login fail: Please carry the API secret key in the 'Authorization' field of the request header",
    1008: "insufficient balance",
    1013: "internal service error",
    1026: "input new_sensitive",
    1027: "output new_sensitive",
    2013: "invalid params",
}
RAW_STATUS = {"running": "Processing", "succeeded": "Success"}


class Invalid(ValueError):
    """A body MiniMax refuses with base_resp 2013; the text says which field."""


def base_resp(code: int = 0, detail: str = "") -> dict[str, Any]:
    message = MESSAGES.get(code, "success") + (f", {detail}" if detail else "")
    return {"status_code": code, "status_msg": message}


def refusal(code: int, detail: str = "", headers: dict[str, str] | None = None) -> Response:
    """MiniMax's error answer: HTTP 200 and the code in ``base_resp``."""
    return json_response({"base_resp": base_resp(code, detail)}, 200, headers)


def file_id_of(task: FakeTask) -> int:
    """A numeric file id derived from the task id (MiniMax's ids are numbers)."""
    return int(hashlib.sha256(task.id.encode()).hexdigest()[:12], 16)


def root_url(request: Request) -> str:
    """The server's root URL: the app mounts this fake under ``/minimax``, the farm's files sit at ``/``."""
    return str(request.url.replace(path="", query="")).rstrip("/")


Handler = Callable[[Request, Any], Awaitable[Response]]


def routes(farm: Farm) -> list[BaseRoute]:
    """MiniMax's endpoints, relative to the mount prefix."""

    def endpoint(step: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """Journal, injected fault, Bearer key and a 2013 for a malformed body: shared by every route."""

        async def run(request: Request) -> Response:
            body = await farm.record(request, PROVIDER, step)
            fault = await farm.fault(PROVIDER, step)
            if fault is not None and fault.status is not None:
                retry = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else None
                if fault.status in (502, 503):
                    return Response(
                        f"{fault.status} Bad Gateway", fault.status, retry, media_type="text/html"
                    )
                code = FAULT_CODES.get(fault.status, 1013 if fault.status >= 500 else 2013)
                return refusal(code, "injected", retry)
            token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if not request.headers.get("authorization", "").startswith("Bearer ") or not token:
                return refusal(1004)
            if request.method == "POST" and not isinstance(body, dict):
                return refusal(2013, "the body must be a JSON object")
            try:
                return await handler(request, body)
            except Invalid as exc:
                return refusal(2013, str(exc))

        return run

    async def speech(request: Request, body: dict[str, Any]) -> Response:
        fmt, speed = check_speech(body)
        text: str = body["text"]
        if "[moderate]" in text:
            return refusal(1026)
        pcm = sim_media.render_pcm(text, speed)
        audio = sim_media.render_wav(text, speed) if fmt != "pcm" else pcm
        length_ms = round(len(pcm) // 2 / sim_media.SAMPLE_RATE_HZ * 1000)
        extra = {
            "audio_length": length_ms,
            "audio_sample_rate": sim_media.SAMPLE_RATE_HZ,
            "audio_size": len(audio),
            "bitrate": body.get("audio_setting", {}).get("bitrate", 128000),
            "audio_format": fmt,
            "audio_channel": 1,
            "word_count": len(text.split()),
            "invisible_character_ratio": 0,
            "usage_characters": len(text),
        }
        return json_response(
            {"data": {"audio": audio.hex(), "status": 2}, "extra_info": extra, "trace_id": uuid.uuid4().hex,
             "base_resp": base_resp()}
        )  # fmt: skip

    async def create(request: Request, body: dict[str, Any]) -> Response:
        check_video(body)
        task = farm.create(PROVIDER, body["model"], str(body.get("prompt", "")), "video", body)
        answer = {"task_id": task.id, "base_resp": base_resp()}
        return await farm.answer(PROVIDER, "submit", json_response(answer))

    async def query(request: Request, body: Any) -> Response:
        task_id = request.query_params.get("task_id", "")
        if not task_id:
            raise Invalid("task_id is required")
        task = farm.find(task_id, PROVIDER)
        if task is None:
            return refusal(2013, "task not found")
        phase = task.phase()
        answer: dict[str, Any] = {"task_id": task.id, "status": "", "file_id": "", "base_resp": base_resp()}
        if phase == "queued":
            answer["status"] = "Preparing" if task.polls <= 1 else "Queueing"
        elif phase in RAW_STATUS:
            answer["status"] = RAW_STATUS[phase]
        else:  # failed, moderated (and canceled, which MiniMax has no API for)
            answer["status"] = "Fail"
            answer["base_resp"] = base_resp(1027 if phase == "moderated" else 0)
        if phase == "succeeded":
            width, height = FRAME_SIZE_PX[task.body.get("resolution", "768P")]
            answer |= {"file_id": file_id_of(task), "video_width": width, "video_height": height}
        return json_response(answer)

    async def retrieve(request: Request, body: Any) -> Response:
        wanted = request.query_params.get("file_id", "")
        if not wanted.isdigit():
            raise Invalid("file_id must be a number")
        task = next(
            (t for t in farm.tasks.values() if t.provider == PROVIDER and file_id_of(t) == int(wanted)), None
        )
        if task is None or task.phase() != "succeeded":
            return refusal(2013, "file not found")
        file = {
            "file_id": file_id_of(task),
            "bytes": len(output_bytes(task)),
            "created_at": int(task.created_at),
            "filename": "output.mp4",
            "purpose": "video_generation",
            "download_url": root_url(request) + task.file_path(),
        }
        return json_response({"file": file, "base_resp": base_resp()})

    return [
        Route("/v1/t2a_v2", endpoint("submit", speech), methods=["POST"]),
        Route("/v1/video_generation", endpoint("submit", create), methods=["POST"]),
        Route("/v1/query/video_generation", endpoint("poll", query), methods=["GET"]),
        Route("/v1/files/retrieve", endpoint("poll", retrieve), methods=["GET"]),
    ]


def check_speech(body: dict[str, Any]) -> tuple[str, float]:
    """Validate a T2A body as MiniMax does; the audio format and speed."""
    unknown = sorted(set(body) - SPEECH_FIELDS)
    if unknown:
        raise Invalid(f"unknown field {unknown[0]}")
    if body.get("model") not in SPEECH_MODELS:
        raise Invalid(f"model {body.get('model')!r} is not a speech model")
    text = body.get("text")
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT_CHARS:
        raise Invalid(f"text must hold 1 to {MAX_TEXT_CHARS} characters")
    if body.get("stream", False) is not False or body.get("output_format", "hex") != "hex":
        raise Invalid("this fake answers stream: false with output_format: hex only")
    voice = body.get("voice_setting")
    if not isinstance(voice, dict) or not isinstance(voice.get("voice_id"), str) or not voice["voice_id"]:
        raise Invalid("voice_setting.voice_id is required")
    speed = voice.get("speed", 1.0)
    if not _number_in(speed, 0.5, 2.0) or not _number_in(voice.get("vol", 1), 0.01, 10):
        raise Invalid("voice_setting.speed must be in [0.5, 2] and vol in (0, 10]")
    if not _number_in(voice.get("pitch", 0), -12, 12):
        raise Invalid("voice_setting.pitch must be in [-12, 12]")
    audio = body.get("audio_setting", {})
    if not isinstance(audio, dict):
        raise Invalid("audio_setting must be an object")
    fmt = audio.get("format", "mp3")
    if fmt not in ("mp3", "pcm", "flac", "wav"):
        raise Invalid(f"audio_setting.format {fmt!r} is not one of mp3, pcm, flac, wav")
    if (
        audio.get("sample_rate", 32000) not in SAMPLE_RATES_HZ
        or audio.get("bitrate", 128000) not in BITRATES_BPS
    ):
        raise Invalid("audio_setting.sample_rate or bitrate is not an allowed value")
    if audio.get("channel", 1) not in (1, 2):
        raise Invalid("audio_setting.channel must be 1 or 2")
    return fmt, float(speed)


def check_video(body: dict[str, Any]) -> None:
    """Validate a video_generation body as MiniMax does."""
    unknown = sorted(set(body) - VIDEO_FIELDS)
    if unknown:
        raise Invalid(f"unknown field {unknown[0]}")
    model = body.get("model")
    if model not in VIDEO_MODELS:
        raise Invalid(f"model {model!r} is not a video model")
    prompt, image = body.get("prompt", ""), body.get("first_frame_image")
    if not isinstance(prompt, str) or len(prompt) > MAX_PROMPT_CHARS:
        raise Invalid(f"prompt must be a string of at most {MAX_PROMPT_CHARS} characters")
    if image is not None and (not isinstance(image, str) or not IMAGE_REF.match(image)):
        raise Invalid("first_frame_image must be a URL or a data:image/ URL")
    if model in IMAGE_MODELS and image is None:
        raise Invalid(f"{model} needs first_frame_image")
    if not prompt.strip() and image is None:
        raise Invalid("prompt is required for text-to-video")
    duration, resolution = body.get("duration", 6), body.get("resolution", "768P")
    if duration not in (6, 10) or isinstance(duration, bool):
        raise Invalid("duration must be 6 or 10")
    if resolution not in FRAME_SIZE_PX:
        raise Invalid(f"resolution {resolution!r} is not one of {', '.join(FRAME_SIZE_PX)}")
    if resolution == "1080P" and duration != 6:
        raise Invalid("1080P supports 6 s only")


def _number_in(value: Any, low: float, high: float) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high
