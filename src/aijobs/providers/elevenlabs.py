"""The ``elevenlabs`` kind: ElevenLabs text-to-speech. ::

    POST {base}/v1/text-to-speech/{voice_id}?output_format=mp3_44100_128   (header xi-api-key)
         {text, model_id, voice_settings?: {speed}}  → the audio bytes
    errors: {"detail": {"status": "quota_exceeded", "message": "…"}}  or FastAPI's {"detail": [...]}

Our ``wav`` is ElevenLabs' ``pcm_24000`` wrapped in a WAV header here: raw PCM is available on
every plan, and the header makes the length exact. ``aac`` and ``flac`` have no ElevenLabs
output format and are refused before anything is sent, as is a speed outside 0.7 to 1.2.
"""

from __future__ import annotations

import io
import wave
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote

import orjson
from pydantic import BaseModel

from aijobs import errors
from aijobs.providers import http
from aijobs.providers.base import MediaResult, NoOptions, ProviderContext
from aijobs.providers.openai_media import speech_result
from aijobs.types.speech import SpeechInput

DEFAULT_BASE_URL = "https://api.elevenlabs.io"
MAX_SPEECH_BYTES = 64 * 1024 * 1024
PCM_RATE_HZ = 24_000
#: ``voice_settings.speed`` bounds ElevenLabs accepts; 1.0 is sent as no setting (the voice's own).
MIN_SPEED, MAX_SPEED = 0.7, 1.2
#: Our format → ElevenLabs' ``output_format``. ``wav`` is requested as PCM and wrapped (see above).
OUTPUT_FORMATS: Mapping[str, str] = {
    "mp3": "mp3_44100_128",
    "wav": f"pcm_{PCM_RATE_HZ}",
    "pcm": f"pcm_{PCM_RATE_HZ}",
    "opus": "opus_48000_64",
}
#: ``detail.status`` codes whose HTTP status undersells them: an exhausted quota (sent as a 401) is
#: billing, so another provider may serve the job.
STATUS_FOR_CODE: Mapping[str, int] = {"quota_exceeded": 402}


class ElevenLabsSpeech:
    """``POST /v1/text-to-speech/{voice_id}``; our ``voice`` is the ElevenLabs voice id."""

    Options: ClassVar[type[BaseModel]] = NoOptions

    def __init__(self, context: ProviderContext) -> None:
        self.context = context
        self.base_url = (context.config.base_url or DEFAULT_BASE_URL).rstrip("/")
        self.headers = http.json_headers(context, "xi-api-key", "")
        self.timeouts = http.timeouts_for(context)

    async def run(self, model: str, request: SpeechInput) -> MediaResult:
        output_format = OUTPUT_FORMATS.get(request.format)
        if output_format is None:
            raise self._refuse(
                model, f"has no {request.format} output; use one of {', '.join(OUTPUT_FORMATS)}"
            )
        body: dict[str, Any] = {"text": request.text, "model_id": model}
        if request.speed != 1.0:
            if not MIN_SPEED <= request.speed <= MAX_SPEED:
                raise self._refuse(model, f"speaks at speeds {MIN_SPEED} to {MAX_SPEED}, not {request.speed}")
            body["voice_settings"] = {"speed": request.speed}
        url = f"{self.base_url}/v1/text-to-speech/{quote(request.voice, safe='')}"
        audio = await self._post(model, url, {"output_format": output_format}, body)
        if request.format == "wav":
            audio = _wav(audio, PCM_RATE_HZ)
        return speech_result(self.context.name, model, request, audio, pcm_rate_hz=PCM_RATE_HZ)

    async def _post(self, model: str, url: str, params: Mapping[str, str], body: dict[str, Any]) -> bytes:
        """The audio, read up to :data:`MAX_SPEECH_BYTES`; an error answer mapped by :func:`error_for`."""
        name = self.context.name
        with http.transport_errors(name, model):
            async with self.context.http.stream(
                "POST", url, params=params, content=orjson.dumps(body), headers=self.headers,
                timeout=self.timeouts,
            ) as response:  # fmt: skip
                if response.status_code >= 400:
                    content = await response.aread()
                    raise error_for(
                        response.status_code, content, response.headers, name, model, self.context.api_key
                    )
                audio = bytearray()
                async for chunk in response.aiter_bytes():
                    audio += chunk
                    if len(audio) > MAX_SPEECH_BYTES:
                        raise errors.ProviderBadResponse(
                            f"{name} {model}: the answer is larger than {MAX_SPEECH_BYTES} bytes",
                            provider=name, model=model, status=response.status_code,
                        )  # fmt: skip
        return bytes(audio)

    def _refuse(self, model: str, what: str) -> errors.ProviderRejected:
        name = self.context.name
        return errors.ProviderRejected(f"{name} {model} {what}", provider=name, model=model)


def error_for(
    status: int, body: bytes, headers: Mapping[str, str], provider: str, model: str, secret: str | None
) -> errors.ProviderError:
    """:func:`http.error_for` on ElevenLabs' error body, rewritten into the ``{"error": {...}}`` shape.

    ElevenLabs nests its code and message in ``detail`` (an object), or lists FastAPI validation
    errors there; the shared reader takes ``detail`` only as a string.
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    detail = data.get("detail") if isinstance(data, dict) else None
    if isinstance(detail, dict):
        code = str(detail.get("status") or "")
        status = STATUS_FOR_CODE.get(code, status)
        body = orjson.dumps({"error": {"code": code, "message": str(detail.get("message") or "")}})
    elif isinstance(detail, list):
        problems = [http.as_dict(d) for d in detail]
        message = "; ".join(f"{'.'.join(map(str, p.get('loc') or []))}: {p.get('msg')}" for p in problems)
        body = orjson.dumps({"error": {"code": "validation_error", "message": message}})
    return http.error_for(status, body, headers, provider, model, secret)


def _wav(pcm: bytes, rate_hz: int) -> bytes:
    """16-bit mono ``pcm`` at ``rate_hz`` as a WAV file."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate_hz)
        wav.writeframes(pcm[: len(pcm) - len(pcm) % 2])
    return out.getvalue()
