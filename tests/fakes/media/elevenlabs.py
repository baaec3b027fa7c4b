"""TEST FAKE: ElevenLabs text-to-speech, as its public API answers; never used in production.

Mounted at ``/elevenlabs``; fault key ``elevenlabs`` (step ``submit``)::

    POST /v1/text-to-speech/{voice_id}?output_format=mp3_44100_128   header xi-api-key
         {text, model_id, voice_settings?: {stability, similarity_boost, style, speed}} → audio bytes

Errors come in ElevenLabs' shapes: ``{"detail": {"status", "message"}}`` (401 ``needs_authorization``
or ``invalid_api_key``, 404 ``voice_not_found``, 400 ``model_not_found``, 429
``too_many_concurrent_requests``) and FastAPI's 422 ``{"detail": [{"loc", "msg", "type"}]}`` for a
bad ``output_format``, text or speed. An injected 402 fault is answered the way ElevenLabs refuses an
exhausted quota: 401 ``quota_exceeded``. Audio is real: ``pcm_R`` is 16-bit mono at R Hz and ``wav_R``
the same in a WAV file; mp3, opus, ulaw and alaw are WAV bytes under their content type (a limitation
of this fake). ``[fail]`` in the text → 500.
"""

from __future__ import annotations

import asyncio
import struct
from array import array
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from tests.fakes.media.farm import Farm, json_response

from aijobs.providers import sim_media

VOICES = frozenset(
    {"21m00Tcm4TlvDq8ikWAM", "JBFqnCBsd6RMkjVDRZzb", "EXAVITQu4vr4xnSDxMaL", "pNInz6obpgDQGcFmaJgB"}
)
MODELS = frozenset({"eleven_multilingual_v2", "eleven_turbo_v2_5", "eleven_flash_v2_5", "eleven_v3"})
RATES_HZ = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
FORMATS = {f"pcm_{r}": "audio/pcm" for r in RATES_HZ} | {f"wav_{r}": "audio/wav" for r in RATES_HZ}
FORMATS |= {f"mp3_{r}_{k}": "audio/mpeg" for r, k in ((22050, 32), (24000, 48))}
FORMATS |= {f"mp3_44100_{k}": "audio/mpeg" for k in (32, 64, 96, 128, 192)}
FORMATS |= {f"opus_48000_{k}": "audio/ogg" for k in (32, 64, 96, 128, 192)}
FORMATS |= {"ulaw_8000": "audio/basic", "alaw_8000": "audio/basic"}
MAX_TEXT_CHARS = 10_000
FAULTS = {
    401: (401, "invalid_api_key", "Invalid API key"),
    402: (401, "quota_exceeded", "This request exceeds your quota of 10000. You have 3 credits remaining."),
    429: (429, "too_many_concurrent_requests", "Too many concurrent requests for your subscription."),
    503: (429, "system_busy", "Our services are experiencing high levels of traffic."),
}


def resample(pcm: bytes, rate_hz: int) -> bytes:
    """16-bit mono PCM at the simulator's 16 kHz, resampled (nearest sample) to ``rate_hz``."""
    source = array("h")
    source.frombytes(pcm)
    step = sim_media.SAMPLE_RATE_HZ
    return array("h", (source[i * step // rate_hz] for i in range(len(source) * rate_hz // step))).tobytes()


def wav_header(rate_hz: int, data_bytes: int) -> bytes:
    """A 44-byte PCM WAV header for 16-bit mono; ``0xFFFFFFFF`` bytes is a streamed file's."""
    riff = min(0xFFFFFFFF, data_bytes + 36)
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI", b"RIFF", riff, b"WAVE", b"fmt ", 16, 1, 1, rate_hz, rate_hz * 2, 2, 16,
        b"data", data_bytes,
    )  # fmt: skip


def _detail(status: int, code: str, message: str) -> Response:
    return json_response({"detail": {"status": code, "message": message}}, status)


def _invalid(where: str, field: str, message: str, value: Any) -> Response:
    """FastAPI's validation answer."""
    problem = {"type": "value_error", "loc": [where, *field.split(".")], "msg": message, "input": value}
    return json_response({"detail": [problem]}, 422)


def routes(farm: Farm) -> list[BaseRoute]:
    """``POST /v1/text-to-speech/{voice_id}`` over ``farm``."""

    async def speech(request: Request) -> Response:
        body = await farm.record(request)
        fault = await farm.fault("elevenlabs", "submit")
        if fault is not None and fault.status is not None:
            status, code, message = FAULTS.get(fault.status, (fault.status, "injected", "injected fault"))
            response = _detail(status, code, message)
            if fault.retry_after:
                response.headers["Retry-After"] = str(fault.retry_after)
            return response
        key = request.headers.get("xi-api-key")
        if not key:
            message = "Neither authorization header nor xi-api-key received, please provide one."
            return _detail(401, "needs_authorization", message)
        body = body if isinstance(body, dict) else {}
        output_format = request.query_params.get("output_format", "mp3_44100_128")
        if output_format not in FORMATS:
            return _invalid(
                "query", "output_format", f"Input should be one of {sorted(FORMATS)}", output_format
            )
        text = body.get("text")
        if not isinstance(text, str) or not 0 < len(text) <= MAX_TEXT_CHARS:
            return _invalid("body", "text", f"String should have 1 to {MAX_TEXT_CHARS} characters", text)
        settings = body.get("voice_settings") or {}
        speed = settings.get("speed", 1.0) if isinstance(settings, dict) else None
        if not isinstance(speed, int | float) or not 0.7 <= speed <= 1.2:
            return _invalid("body", "voice_settings.speed", "Input should be between 0.7 and 1.2", speed)
        voice_id = request.path_params["voice_id"]
        if voice_id not in VOICES:
            return _detail(404, "voice_not_found", f"A voice with voice_id {voice_id} was not found.")
        model_id = body.get("model_id", "eleven_multilingual_v2")
        if model_id not in MODELS:
            return _detail(400, "model_not_found", f"A model with model ID {model_id} does not exist.")
        if "[fail]" in text:
            return _detail(500, "internal_error", "An internal error occurred.")
        kind, _, rest = output_format.partition("_")
        rate_hz = int(rest.split("_")[0]) if kind in ("pcm", "wav") else 24_000
        pcm = resample(await asyncio.to_thread(sim_media.render_pcm, text, float(speed)), rate_hz)
        audio = pcm if kind == "pcm" else wav_header(rate_hz, len(pcm)) + pcm
        return Response(audio, 200, media_type=FORMATS[output_format])

    return [Route("/v1/text-to-speech/{voice_id}", speech, methods=["POST"])]
