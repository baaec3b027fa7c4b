"""ElevenLabsSpeech against the ElevenLabs fake (tests/fakes/media/elevenlabs.py), and its error mapping."""

from __future__ import annotations

import io
import wave
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest

from aijobs import errors
from aijobs.providers import elevenlabs, openai_media, sim_media
from aijobs.providers.base import MediaResult
from aijobs.providers.elevenlabs import ElevenLabsSpeech
from aijobs.types.common import Media
from aijobs.types.speech import SpeechInput
from tests.providers.tasks_helpers import API_KEY, context, farm, inject

VOICE = "JBFqnCBsd6RMkjVDRZzb"
MODEL = "eleven_multilingual_v2"
TEXT = "Every good boy deserves fudge, said the teacher"


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(timeout=30) as client:
        yield client


def adapter(http: httpx2.AsyncClient, fakes: str, api_key: str | None = API_KEY) -> ElevenLabsSpeech:
    return ElevenLabsSpeech(context(http, "elevenlabs", fakes + "/elevenlabs", api_key=api_key))


async def speak(
    http: httpx2.AsyncClient, fakes: str, fmt: str, speed: float = 1.0, voice: str = VOICE
) -> tuple[Media, MediaResult]:
    request = SpeechInput(text=TEXT, voice=voice, format=fmt, speed=speed)
    result = await adapter(http, fakes).run(MODEL, request)
    [item] = result.items
    assert isinstance(item, Media)
    return item, result


async def calls(http: httpx2.AsyncClient, fakes: str) -> list[dict[str, Any]]:
    return [r for r in await farm(http, fakes, "requests") if r["method"] == "POST"]


async def test_mp3_request_on_the_wire(http: httpx2.AsyncClient, media_fakes: str) -> None:
    item, result = await speak(http, media_fakes, "mp3")

    assert (item.content_type, item.extension, item.duration_s) == ("audio/mpeg", "mp3", None)
    assert result.usage.estimated
    assert result.usage.units == pytest.approx(len(TEXT) / openai_media.CHARS_PER_S, abs=0.001)
    [call] = await calls(http, media_fakes)
    assert call["path"] == f"/elevenlabs/v1/text-to-speech/{VOICE}"
    assert call["query"] == "output_format=mp3_44100_128"
    assert call["headers"]["xi-api-key"] == API_KEY and "authorization" not in call["headers"]
    assert call["json"] == {"text": TEXT, "model_id": MODEL}  # speed 1.0: the voice's own settings


async def test_wav_is_pcm_wrapped_with_an_exact_duration(http: httpx2.AsyncClient, media_fakes: str) -> None:
    item, result = await speak(http, media_fakes, "wav")

    assert (item.content_type, item.extension) == ("audio/wav", "wav")
    with wave.open(io.BytesIO(item.data)) as wav:
        assert (wav.getframerate(), wav.getsampwidth(), wav.getnchannels()) == (24_000, 2, 1)
        seconds = wav.getnframes() / wav.getframerate()
    assert item.duration_s == pytest.approx(seconds, abs=0.001)
    assert item.duration_s == pytest.approx(sim_media.speech_seconds(TEXT, 1.0), abs=0.001)
    assert result.usage.units == item.duration_s and not result.usage.estimated
    [call] = await calls(http, media_fakes)
    assert call["query"] == "output_format=pcm_24000"


async def test_pcm_duration_from_its_length(http: httpx2.AsyncClient, media_fakes: str) -> None:
    item, result = await speak(http, media_fakes, "pcm", speed=0.8)

    assert item.content_type == "audio/pcm"
    assert item.duration_s == pytest.approx(len(item.data) / 48_000, abs=0.001)
    assert item.duration_s == pytest.approx(sim_media.speech_seconds(TEXT, 0.8), abs=0.001)
    assert result.usage.units == item.duration_s and not result.usage.estimated
    [call] = await calls(http, media_fakes)
    assert call["json"]["voice_settings"] == {"speed": 0.8}


async def test_opus_is_requested_as_ogg_opus(http: httpx2.AsyncClient, media_fakes: str) -> None:
    item, _ = await speak(http, media_fakes, "opus")

    assert (item.content_type, item.extension) == ("audio/ogg", "opus")
    [call] = await calls(http, media_fakes)
    assert call["query"] == "output_format=opus_48000_64"


@pytest.mark.parametrize(("fmt", "speed"), [("aac", 1.0), ("flac", 1.0), ("mp3", 2.0), ("mp3", 0.5)])
async def test_what_elevenlabs_cannot_do_is_refused_before_sending(
    http: httpx2.AsyncClient, media_fakes: str, fmt: str, speed: float
) -> None:
    with pytest.raises(errors.ProviderRejected):
        await speak(http, media_fakes, fmt, speed=speed)
    assert await calls(http, media_fakes) == []


@pytest.mark.parametrize(
    ("status", "retry_after", "error", "code"),
    [
        (401, None, errors.ProviderAuth, "invalid_api_key"),
        (402, None, errors.ProviderAuth, "quota_exceeded"),  # the fake answers 401 quota_exceeded
        (429, 5, errors.ProviderRateLimited, "too_many_concurrent_requests"),
        (503, None, errors.ProviderRateLimited, "system_busy"),  # the fake answers 429 system_busy
    ],
)
async def test_errors_are_mapped_and_keep_the_key_out(
    http: httpx2.AsyncClient,
    media_fakes: str,
    status: int,
    retry_after: float | None,
    error: type[errors.ProviderError],
    code: str,
) -> None:
    await inject(
        http, media_fakes, provider="elevenlabs", step="submit", status=status, retry_after=retry_after
    )
    with pytest.raises(error) as caught:
        await speak(http, media_fakes, "mp3")
    assert type(caught.value) is error
    assert code in caught.value.message
    assert caught.value.retry_after_s == retry_after
    assert API_KEY not in str(caught.value) and API_KEY not in caught.value.body_excerpt


async def test_a_missing_key_and_an_unknown_voice(http: httpx2.AsyncClient, media_fakes: str) -> None:
    with pytest.raises(errors.ProviderAuth, match="needs_authorization"):
        await adapter(http, media_fakes, api_key=None).run(MODEL, SpeechInput(text="hi", format="mp3"))
    with pytest.raises(errors.ProviderModelNotFound, match="voice_not_found"):
        await speak(http, media_fakes, "mp3", voice="NoSuchVoice123")


def test_quota_as_billing_and_validation_lists_are_read() -> None:
    quota = (
        b'{"detail": {"status": "quota_exceeded", "message": "This request exceeds your quota of 10000."}}'
    )
    error = elevenlabs.error_for(401, quota, {}, "el", MODEL, API_KEY)
    assert isinstance(error, errors.ProviderAuth) and error.status == 402
    problems = b'{"detail": [{"type": "string_too_long", "loc": ["body", "text"], "msg": "String should have at most 10000 characters"}]}'
    error = elevenlabs.error_for(422, problems, {}, "el", MODEL, API_KEY)
    assert isinstance(error, errors.ProviderRejected)
    assert "body.text: String should have at most 10000 characters" in error.message


async def test_an_oversize_answer_is_refused(
    http: httpx2.AsyncClient, media_fakes: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(elevenlabs, "MAX_SPEECH_BYTES", 10_000)
    with pytest.raises(errors.ProviderBadResponse, match="larger than 10000 bytes"):
        await speak(http, media_fakes, "pcm")
