"""Synchronous media on the ``openai`` kind: images (generations, edits) and speech.

The image endpoint is copied by vendors that differ (Zhipu CogView and Doubao Seedream on Ark make
one image per call; CogView answers only URLs): those differences are data, :data:`IMAGE_QUIRKS` by
preset and :data:`MODEL_QUIRKS` by model name prefix, never branches on vendor names. ::

    OpenAIImage   POST /images/generations {model, prompt, n?, size, response_format?, output_format?}
                  POST /images/edits multipart {image, prompt, model, n?, size, …} (OpenAI only)
                  → {created, data: [{url} | {b64_json}, size?], usage?}: url → RemoteFile, b64 → Media
    OpenAISpeech  POST /audio/speech {model, input, voice, response_format, speed} → the audio bytes
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import re
import struct
import wave
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import orjson

from aijobs.errors import ProviderBadResponse, ProviderContentFiltered, ProviderError, ProviderRejected
from aijobs.providers import http
from aijobs.providers.base import MediaResult
from aijobs.providers.openai import _OpenAIKind
from aijobs.types.common import Media, RemoteFile, Usage
from aijobs.types.image import ImageInput
from aijobs.types.speech import SpeechInput

MAX_SPEECH_BYTES = 64 * 1024 * 1024
#: OpenAI's ``pcm`` answer: 24 kHz, 16-bit little-endian, mono.
PCM_RATE_HZ = 24_000


@dataclass(frozen=True, slots=True)
class ImageQuirks:
    """How one vendor's (or model's) image endpoint differs from OpenAI's dall-e-2."""

    #: The endpoint ignores ``n``: n images take n concurrent calls, each without ``n``.
    one_per_call: bool = False
    #: What to ask for in ``response_format``; ``None``: the field is refused or ignored.
    response_format: str | None = "url"
    #: ``output_format`` is honoured; otherwise the vendor picks and we read what came back.
    output_format: bool = False
    #: ``/images/edits`` (multipart) exists.
    edits: bool = False
    #: Error codes that mean a content-policy refusal, for vendors whose text says so in no English.
    policy_codes: frozenset[str] = frozenset()


IMAGE_QUIRKS: Mapping[str, ImageQuirks] = {
    "openai": ImageQuirks(edits=True),
    "zhipu": ImageQuirks(one_per_call=True, response_format=None, policy_codes=frozenset({"1301"})),
    "doubao": ImageQuirks(one_per_call=True),
    "doubao-intl": ImageQuirks(one_per_call=True),
}
#: Model name prefix → the fields it overrides (gpt-image answers only b64_json and rejects the field).
MODEL_QUIRKS: Mapping[str, Mapping[str, Any]] = {
    "gpt-image": {"response_format": None, "output_format": True},
    "dall-e-3": {"one_per_call": True, "edits": False},
}


def image_quirks(preset: str | None, model: str) -> ImageQuirks:
    """The quirks of ``model`` on ``preset``: the preset's, with the model's overrides applied."""
    quirks = IMAGE_QUIRKS.get(preset or "openai", ImageQuirks())
    for prefix, overrides in MODEL_QUIRKS.items():
        if model.startswith(prefix):
            quirks = replace(quirks, **overrides)
    return quirks


_DATA_URL = re.compile(r"data:(image/[A-Za-z0-9.+-]+);base64,(.*)", re.DOTALL)
_SIZE = re.compile(r"([0-9]{1,5})x([0-9]{1,5})")
T = TypeVar("T")


class OpenAIImage(_OpenAIKind):
    """Images from ``/images/generations``, or ``/images/edits`` when the request carries an image."""

    async def run(self, model: str, request: ImageInput) -> MediaResult:
        quirks = image_quirks(self.context.config.preset, model)
        counts = [None] * request.n if quirks.one_per_call else [request.n]
        if request.image is None:
            calls = [
                self._post("/images/generations", model, self.body(model, request, quirks, n)) for n in counts
            ]
        else:
            if not quirks.edits:
                raise self._refuse(model, "cannot edit images")
            image = self._decode(model, request.image)
            calls = [self._edit(model, request, quirks, image, n) for n in counts]
        try:
            answers = await _all(calls)
        except ProviderError as exc:
            raise _policy(exc, quirks) from None
        items = [item for data in answers for item in self._items(model, request, quirks, data)]
        # gpt-image and Seedream bill tokens too; the others report no usage.
        blocks = [http.as_dict(data.get("usage")) for data in answers]
        usage = Usage(
            units=len(items),
            input_tokens=sum(int(b.get("input_tokens") or 0) for b in blocks),
            output_tokens=sum(int(b.get("output_tokens") or 0) for b in blocks),
        )
        return MediaResult(items=items, model=model, usage=usage)

    def body(self, model: str, request: ImageInput, quirks: ImageQuirks, n: int | None) -> dict[str, Any]:
        """The generation request: ``n`` only where one call makes several images."""
        body: dict[str, Any] = {"model": model, "prompt": request.prompt, "size": request.size}
        if n is not None:
            body["n"] = n
        if quirks.response_format:
            body["response_format"] = quirks.response_format
        if quirks.output_format:
            body["output_format"] = request.output_format
        return body

    async def _edit(
        self, model: str, request: ImageInput, quirks: ImageQuirks, image: tuple[bytes, str], n: int | None
    ) -> Any:
        """``POST /images/edits`` as multipart/form-data (httpx2 sets the boundary's content type)."""
        fields = {k: str(v) for k, v in self.body(model, request, quirks, n).items()}
        data, mime = image
        files = {"image": (f"image.{mime.split('/')[1]}", data, mime)}
        headers = {k: v for k, v in self.headers.items() if k.lower() != "content-type"}
        name = self.context.name
        url = self.base_url + "/images/edits"
        with http.transport_errors(name, model, url=url):
            response = await self.context.http.post(
                url, data=fields, files=files, headers=headers, timeout=self.timeouts
            )
        if response.status_code >= 400:
            raise http.error_for(
                response.status_code, response.content, response.headers, name, model, self.context.api_key
            )
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise self._bad(model, "the edit answer is not JSON", response.text[:500]) from None

    def _decode(self, model: str, image: str) -> tuple[bytes, str]:
        """The image to edit, from the data URL the worker made of the caller's image."""
        match = _DATA_URL.fullmatch(image)
        if match is None:
            raise self._refuse(model, "edits take the image as a data:image/...;base64 URL")
        try:
            return base64.b64decode(match[2], validate=True), match[1]
        except (binascii.Error, ValueError):
            raise self._refuse(model, "the image's data URL is not valid base64") from None

    def _items(
        self, model: str, request: ImageInput, quirks: ImageQuirks, data: Any
    ) -> list[Media | RemoteFile]:
        rows = data.get("data") if isinstance(data, dict) else None
        if not isinstance(rows, list) or not rows:
            raise self._bad(model, "the answer has no data[]", data)
        items: list[Media | RemoteFile] = []
        for row in rows:
            row = http.as_dict(row)
            # Ark says which size it made; the others make the size asked for.
            sized = _SIZE.fullmatch(str(row.get("size") or ""))
            width, height = (int(sized[1]), int(sized[2])) if sized else request.dimensions()
            asked = request.output_format if quirks.output_format else None
            if isinstance(row.get("b64_json"), str):
                try:
                    content = base64.b64decode(row["b64_json"], validate=True)
                except (binascii.Error, ValueError):
                    raise self._bad(model, "data[].b64_json is not valid base64", {}) from None
                fmt = image_format(content) or request.output_format  # the bytes say what they are
                items.append(Media(content, IMAGE_TYPES[fmt], fmt, width=width, height=height))
            elif isinstance(row.get("url"), str) and row["url"].startswith(("https://", "http://")):
                # dall-e and CogView URLs expire within hours: the worker downloads them at once.
                content_type = IMAGE_TYPES[asked] if asked else None
                items.append(RemoteFile(row["url"], content_type, asked, width=width, height=height))
            else:
                raise self._bad(model, "a data[] item has neither url nor b64_json", data)
        return items

    def _refuse(self, model: str, what: str) -> ProviderRejected:
        name = self.context.name
        return ProviderRejected(f"{name} {model} {what}", provider=name, model=model)


def _policy(exc: ProviderError, quirks: ImageQuirks) -> ProviderError:
    """``exc``, or a content filter when its body carries one of the vendor's policy codes."""
    if not quirks.policy_codes or isinstance(exc, ProviderContentFiltered):
        return exc
    _, code, _ = http.error_details(exc.body_excerpt.encode())
    if code not in quirks.policy_codes:
        return exc
    return ProviderContentFiltered(
        exc.message, provider=exc.provider, model=exc.model, status=exc.status, body=exc.body_excerpt
    )


async def _all(calls: Sequence[Awaitable[T]]) -> list[T]:
    """Every call's answer; the first failure cancels the calls still running (their images are moot)."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        raise


class OpenAISpeech(_OpenAIKind):
    """Speech from ``/audio/speech``: the answer is the audio file itself."""

    async def run(self, model: str, request: SpeechInput) -> MediaResult:
        body = {
            "model": model, "input": request.text, "voice": request.voice,
            "response_format": request.format, "speed": request.speed,
        }  # fmt: skip
        audio, _ = await http.post_for_bytes(
            self.context, self.base_url + "/audio/speech", body, model=model, headers=self.headers,
            timeouts=self.timeouts, max_bytes=MAX_SPEECH_BYTES,
        )  # fmt: skip
        return speech_result(self.context.name, model, request, audio, pcm_rate_hz=PCM_RATE_HZ)


IMAGE_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
AUDIO_TYPES = {
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "opus": "audio/ogg",  # Opus in an Ogg container
    "aac": "audio/aac",
    "flac": "audio/flac",
    "pcm": "audio/pcm",
}
#: A speaking pace for estimating the length of compressed audio we do not decode.
CHARS_PER_S = 14.0


def image_format(data: bytes) -> str | None:
    """``png``, ``jpeg`` or ``webp`` from the file's magic bytes; ``None`` for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def speech_result(
    provider: str, model: str, request: SpeechInput, audio: bytes, *, pcm_rate_hz: int
) -> MediaResult:
    """One audio file as a result: exact seconds for wav and 16-bit mono pcm, an estimate otherwise."""
    seconds: float | None = None
    if request.format == "wav":
        audio, seconds = wav_seconds(audio, provider, model)
    elif request.format == "pcm":
        seconds = round(len(audio) / (pcm_rate_hz * 2), 3)
    media = Media(audio, AUDIO_TYPES[request.format], request.format, duration_s=seconds)
    if seconds is None:
        estimate = round(len(request.text) / CHARS_PER_S / request.speed, 3)
        return MediaResult(items=[media], model=model, usage=Usage(units=estimate, estimated=True))
    return MediaResult(items=[media], model=model, usage=Usage(units=seconds))


def wav_seconds(audio: bytes, provider: str, model: str) -> tuple[bytes, float]:
    """The WAV with truthful chunk sizes, and its length in seconds.

    A WAV written while streaming cannot know its length: its header claims ``0xFFFFFFFF`` bytes.
    Such sizes are cut to what arrived, so every reader (and ``wave``) sees the real length.
    """
    fixed = bytearray(audio)
    offset = 12
    while audio[:4] == b"RIFF" and audio[8:12] == b"WAVE" and offset + 8 <= len(fixed):
        chunk, size = fixed[offset : offset + 4], struct.unpack_from("<I", fixed, offset + 4)[0]
        if chunk == b"data":
            available = len(fixed) - offset - 8
            if size > available:
                struct.pack_into("<I", fixed, offset + 4, available)
                struct.pack_into("<I", fixed, 4, len(fixed) - 8)
            break
        offset += 8 + size + (size & 1)
    try:
        with wave.open(io.BytesIO(bytes(fixed)), "rb") as wav:
            seconds = wav.getnframes() / wav.getframerate()
    except (wave.Error, EOFError, struct.error, ZeroDivisionError) as exc:
        raise ProviderBadResponse(
            f"{provider} {model}: the audio is not a readable WAV ({exc})", provider=provider, model=model
        ) from None
    return bytes(fixed), round(seconds, 3)
