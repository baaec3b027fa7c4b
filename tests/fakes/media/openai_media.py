"""TEST FAKE: OpenAI's image and speech endpoints, and the copies Zhipu and Ark serve; never in production.

Mounted at ``/openai``; each vendor checks like the real one and answers errors in its own shape::

    POST /v1/images/generations  /v1/images/edits (multipart)  /v1/audio/speech     fault key "openai"
    POST /zhipu/api/paas/v4/images/generations   CogView: one image, URL only        fault key "zhipu"
    POST /ark/api/v3/images/generations          Seedream: one JPEG, url|b64_json    fault key "seedream"
    GET  /_files/{id}.{ext}                      URL results (``download`` faults)

Images are real PNGs (Ark: JPEGs) at the requested size. Speech is 24 kHz 16-bit mono; ``wav`` has a
streamed header (sizes ``0xFFFFFFFF``) as OpenAI's does [UNVERIFIED]; mp3/opus/aac/flac are WAV bytes
under the format's content type (a limitation of this fake). ``[moderate]`` → the vendor's policy
refusal, ``[fail]`` → its server error. An edit's journal entry gets ``form``: fields, image digest.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
import uuid
from base64 import b64encode
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from tests.fakes.media.elevenlabs import resample, wav_header
from tests.fakes.media.farm import Farm, json_response

from aijobs.providers import sim_media

SIZES = {
    "dall-e-2": {"256x256", "512x512", "1024x1024"},
    "dall-e-3": {"1024x1024", "1792x1024", "1024x1792"},
    "gpt-image-1": {"1024x1024", "1536x1024", "1024x1536"},
}
MAX_PROMPT_CHARS = {"dall-e-2": 1000, "dall-e-3": 4000, "gpt-image-1": 32000}
TTS_MODELS = frozenset({"tts-1", "tts-1-hd", "gpt-4o-mini-tts"})
VOICES = frozenset({"alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer"})
SPEECH_TYPES = {"mp3": "audio/mpeg", "opus": "audio/opus", "aac": "audio/aac", "flac": "audio/flac"}
SPEECH_TYPES |= {"wav": "audio/wav", "pcm": "audio/pcm"}
ZHIPU_MODELS = frozenset({"cogview-3", "cogview-3-plus", "cogview-3-flash", "cogview-4", "cogview-4-250304"})
ARK_MAX_SIDE_PX = {"doubao-seedream-3-0-t2i-250415": 2048, "doubao-seedream-4-0-250828": 4096}
IMAGE_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
OPENAI_RATE_HZ = 24_000


@dataclass
class Refusal(Exception):
    """An error answer, rendered in the vendor's shape by :class:`Vendor`."""

    status: int
    code: str | None
    message: str
    param: str | None = None


_ARK_TYPES = {400: "BadRequest", 401: "Unauthorized", 404: "NotFound", 429: "TooManyRequests"}


@dataclass(frozen=True)
class Vendor:
    """One vendor's error shape (``openai``, ``zhipu``, ``ark``) and stock refusals (key → code, message)."""

    provider: str
    shape: str
    stock: dict[int | str, tuple[str, str]] = field(default_factory=dict)

    def refusal(self, key: int | str, status: int | None = None) -> Refusal:
        code, message = self.stock.get(key, ("injected", f"injected fault {key}"))
        return Refusal(status or (key if isinstance(key, int) else 400), code, message)

    def render(self, r: Refusal) -> dict[str, Any]:
        if self.shape == "zhipu":
            return {"error": {"code": r.code, "message": r.message}}
        if self.shape == "ark":
            message = f"{r.message} Request id: {uuid.uuid4().hex}"
            kind = _ARK_TYPES.get(r.status, "InternalServerError")
            return {"error": {"code": r.code, "message": message, "param": r.param or "", "type": kind}}
        kind = {429: "requests"}.get(r.status, "server_error" if r.status >= 500 else "invalid_request_error")
        return {"error": {"message": r.message, "type": kind, "param": r.param, "code": r.code}}


_MASKED = "Incorrect API key provided: {masked}. You can find your API key at https://platform.openai.com."
OPENAI = Vendor("openai", "openai", {
    401: ("invalid_api_key", _MASKED),
    429: ("rate_limit_exceeded", "Rate limit reached for images per minute. Please try again later."),
    500: ("server_error", "The server had an error while processing your request. Sorry about that!"),
    503: ("server_overloaded", "The engine is currently overloaded, please try again later."),
    "moderate": ("content_policy_violation", "Your request was rejected as a result of our safety system."),
})  # fmt: skip
ZHIPU = Vendor("zhipu", "zhipu", {
    401: ("1000", "身份验证失败。"),
    429: ("1302", "您当前使用该API的并发数过高，请降低并发，或联系客服增加限额。"),  # noqa: RUF001
    500: ("500", "内部错误。"),
    "moderate": ("1301", "系统检测到输入或生成内容可能包含不安全或敏感内容。"),
})  # fmt: skip
ARK = Vendor("seedream", "ark", {
    401: ("AuthenticationError", "The API key or AK/SK in the request is missing or invalid."),
    429: ("RateLimitExceeded.EndpointRPMExceeded", "The request rate of this endpoint exceeded its limit."),
    500: ("InternalServiceError", "The service encountered an unexpected internal error."),
    "moderate": ("InputTextSensitiveContentDetected", "The input text may contain sensitive information."),
})  # fmt: skip


def _invalid(param: str, message: str, code: str = "invalid_value", status: int = 400) -> Refusal:
    """OpenAI's answer to a bad parameter."""
    return Refusal(status, code, message, param)


Handler = Callable[[Request, Any, dict[str, Any]], Awaitable[Response]]


def _size(value: Any, low: int, high: int, step: int = 1) -> tuple[int, int] | None:
    """``WxH`` within [low, high] px a side, multiples of ``step``; ``None`` otherwise."""
    match = re.fullmatch(r"([0-9]{1,5})x([0-9]{1,5})", str(value))
    width, height = (int(match[1]), int(match[2])) if match else (0, 0)
    return (width, height) if all(low <= s <= high and s % step == 0 for s in (width, height)) else None


def openai_params(fields: dict[str, Any], models: set[str]) -> tuple[str, str, int, tuple[int, int]]:
    """OpenAI's checks shared by generations and edits: ``(model, prompt, n, size)``."""
    model = str(fields.get("model") or "dall-e-2")
    if model not in models:
        raise _invalid("model", f"The model `{model}` does not exist.", "model_not_found", 404)
    prompt = fields.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise _invalid("prompt", "Missing required parameter: 'prompt'.", "missing_required_parameter")
    if len(prompt) > (limit := MAX_PROMPT_CHARS[model]):
        raise _invalid("prompt", f"Invalid 'prompt': longer than {limit}.", "string_above_max_length")
    n = int(fields.get("n", 1)) if str(fields.get("n", 1)).isdecimal() else 0
    if not 1 <= n <= 10 or (model == "dall-e-3" and n != 1):
        raise _invalid("n", f"Invalid 'n': {n} images is not supported by {model}.")
    size = str(fields.get("size") or "1024x1024")
    if size not in SIZES[model]:
        raise _invalid("size", f"Invalid value: '{size}'. Supported values are: {sorted(SIZES[model])}.")
    for name, allowed in (("response_format", ("url", "b64_json")), ("output_format", tuple(IMAGE_TYPES))):
        if name in fields and (model == "gpt-image-1") != (name == "output_format"):
            raise _invalid(name, f"Unknown parameter: '{name}'.", "unknown_parameter")
        if name in fields and fields[name] not in allowed:
            raise _invalid(name, f"Invalid value: '{fields[name]}'. Supported values are: {allowed}.")
    width, height = size.split("x")
    return model, prompt, n, (int(width), int(height))


def routes(farm: Farm) -> list[BaseRoute]:
    """The endpoints above over ``farm``; generated files live in this closure's ``files``."""
    files: dict[str, tuple[bytes, str, str]] = {}  # id → (bytes, content type, fault key)

    def endpoint(vendor: Vendor, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def route(request: Request) -> Response:
            body = await farm.record(request)
            entry = farm.journal[-1]  # no await since record() appended it: this request's entry
            fault = await farm.fault(vendor.provider, "submit")
            auth = request.headers.get("authorization", "")
            try:
                if fault is not None and fault.status is not None:
                    refusal = vendor.refusal(fault.status)
                    refusal.message = refusal.message.format(masked=auth[7:10] + "*" * 8 + auth[-4:])
                    headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else None
                    return json_response(vendor.render(refusal), refusal.status, headers)
                if not auth.startswith("Bearer ") or len(auth) < 8:
                    raise Refusal(401, vendor.refusal(401).code, "You didn't provide an API key.")
                return await handler(request, body if isinstance(body, dict) else {}, entry)
            except Refusal as refusal:
                return json_response(vendor.render(refusal), refusal.status)

        return route

    async def images(
        request: Request, vendor: Vendor, prompt: str, count: int, size: tuple[int, int], fmt: str, b64: bool
    ) -> list[dict[str, Any]]:
        """``count`` rendered images as ``{url}`` or ``{b64_json}`` items, or the vendor's refusal."""
        for marker, status in (("moderate", 400), ("fail", 500)):
            if f"[{marker}]" in prompt:
                raise vendor.refusal(marker if marker == "moderate" else status, status)
        items = []
        for i in range(count):
            data = await asyncio.to_thread(sim_media.render_image, f"{prompt}#{i}", *size, fmt)
            if b64:
                items.append({"b64_json": b64encode(data).decode()})
                continue
            file_id = uuid.uuid4().hex
            files[file_id] = (data, IMAGE_TYPES[fmt], vendor.provider)
            items.append({"url": str(request.url_for("openai_media_file", file_id=file_id, ext=fmt))})
        return items

    async def openai_answer(request: Request, fields: dict[str, Any], prompt: str) -> Response:
        model, _, n, size = openai_params(fields, set(SIZES))
        gpt_image = model == "gpt-image-1"
        fmt = str(fields.get("output_format") or "png")
        b64 = gpt_image or fields.get("response_format") == "b64_json"
        data = await images(request, OPENAI, prompt, n, size, fmt, b64)
        for item in data if model == "dall-e-3" else []:
            item["revised_prompt"] = f"A detailed rendering of: {prompt}"
        answer: dict[str, Any] = {"created": int(time.time()), "data": data}
        if gpt_image:
            tokens_in, tokens_out = len(prompt.split()) + 5, 1056 * n
            details = {"text_tokens": tokens_in, "image_tokens": 0}
            answer["usage"] = {"total_tokens": tokens_in + tokens_out, "input_tokens": tokens_in}
            answer["usage"] |= {"output_tokens": tokens_out, "input_tokens_details": details}
        return json_response(answer)

    async def openai_generate(request: Request, body: dict[str, Any], entry: dict[str, Any]) -> Response:
        return await openai_answer(request, body, str(body.get("prompt") or ""))

    async def openai_edit(request: Request, body: dict[str, Any], entry: dict[str, Any]) -> Response:
        form = await request.form()
        try:
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
            image = form.get("image")
            if not isinstance(image, UploadFile):
                raise _invalid("image", "Missing required parameter: 'image'.", "missing_required_parameter")
            data = await image.read()
        finally:
            await form.close()
        digest = hashlib.sha256(data).hexdigest()
        described = {"filename": image.filename, "content_type": image.content_type, "bytes": len(data)}
        entry["form"] = {"fields": fields, "files": {"image": {**described, "sha256": digest}}}
        model, prompt, _, _ = openai_params(fields, {"dall-e-2", "gpt-image-1"})
        if model == "dall-e-2" and (not data.startswith(b"\x89PNG\r\n\x1a\n") or len(data) > 4 * 2**20):
            raise _invalid("image", "Uploaded image must be a PNG and less than 4 MB.", "invalid_image")
        return await openai_answer(request, fields, f"{prompt} (edit of {digest[:12]})")

    async def openai_speech(request: Request, body: dict[str, Any], entry: dict[str, Any]) -> Response:
        model, text, voice = body.get("model"), body.get("input"), body.get("voice")
        fmt, speed = body.get("response_format", "mp3"), body.get("speed", 1.0)
        if model not in TTS_MODELS:
            raise _invalid("model", f"The model `{model}` does not exist.", "model_not_found", 404)
        for param, ok in (
            ("input", isinstance(text, str) and 0 < len(text) <= 4096),
            ("voice", voice in VOICES),
            ("response_format", fmt in SPEECH_TYPES),
            ("speed", isinstance(speed, int | float) and 0.25 <= speed <= 4.0),
        ):
            if not ok:
                raise _invalid(param, f"Invalid value for '{param}': {body.get(param)!r}.")
        assert isinstance(text, str)
        if "[moderate]" in text:
            raise OPENAI.refusal("moderate", 400)
        pcm = resample(await asyncio.to_thread(sim_media.render_pcm, text, float(speed)), OPENAI_RATE_HZ)
        audio = pcm if fmt == "pcm" else wav_header(OPENAI_RATE_HZ, 0xFFFFFFFF) + pcm
        chunks = (audio[i : i + 65_536] for i in range(0, len(audio), 65_536))
        return StreamingResponse(chunks, media_type=SPEECH_TYPES[fmt])

    async def zhipu_generate(request: Request, body: dict[str, Any], entry: dict[str, Any]) -> Response:
        if body.get("model") not in ZHIPU_MODELS:
            raise Refusal(400, "1211", "模型不存在，请检查模型代码。")  # noqa: RUF001
        if not isinstance(body.get("prompt"), str) or not body["prompt"]:
            raise Refusal(400, "1214", "prompt 不能为空")
        size = _size(body.get("size") or "1024x1024", 512, 2048, 16)
        if size is None:
            raise Refusal(400, "1214", "size 参数不合法")
        data = await images(request, ZHIPU, body["prompt"], 1, size, "png", False)  # one image, a URL
        filtered = [{"role": "assistant", "level": 3}]
        return json_response({"created": int(time.time()), "data": data, "content_filter": filtered})

    async def ark_generate(request: Request, body: dict[str, Any], entry: dict[str, Any]) -> Response:
        model = str(body.get("model"))
        max_side = ARK_MAX_SIDE_PX.get(model, 2048 if model.startswith("ep-") else 0)
        if not max_side:
            message = f"The model or endpoint {model} does not exist or you do not have access to it."
            raise Refusal(404, "InvalidEndpointOrModel.NotFound", message)
        if not isinstance(body.get("prompt"), str) or not body["prompt"]:
            raise Refusal(400, "MissingParameter", "The required parameter `prompt` is missing.", "prompt")
        response_format = body.get("response_format", "url")
        size = _size(body.get("size") or "1024x1024", 512, max_side)
        if size is None or response_format not in ("url", "b64_json"):
            name = "size" if size is None else "response_format"
            message = f"The parameter `{name}` specified in the request is not valid."
            raise Refusal(400, "InvalidParameter", message, name)
        data = await images(request, ARK, body["prompt"], 1, size, "jpeg", response_format == "b64_json")
        for item in data:
            item["size"] = f"{size[0]}x{size[1]}"
        tokens = size[0] * size[1] // 256
        usage = {"generated_images": 1, "output_tokens": tokens, "total_tokens": tokens}
        return json_response({"model": model, "created": int(time.time()), "data": data, "usage": usage})

    async def file(request: Request) -> Response:
        found = files.get(request.path_params["file_id"])
        if found is None:
            return json_response({"detail": "Not Found"}, 404)
        fault = await farm.fault(found[2], "download")
        if fault is not None and fault.status is not None:
            return json_response({"detail": "injected"}, fault.status)
        return Response(found[0], 200, media_type=found[1])

    return [
        Route("/v1/images/generations", endpoint(OPENAI, openai_generate), methods=["POST"]),
        Route("/v1/images/edits", endpoint(OPENAI, openai_edit), methods=["POST"]),
        Route("/v1/audio/speech", endpoint(OPENAI, openai_speech), methods=["POST"]),
        Route("/zhipu/api/paas/v4/images/generations", endpoint(ZHIPU, zhipu_generate), methods=["POST"]),
        Route("/ark/api/v3/images/generations", endpoint(ARK, ark_generate), methods=["POST"]),
        Route("/_files/{file_id}.{ext}", file, methods=["GET"], name="openai_media_file"),
    ]
