"""OpenAIImage and OpenAISpeech against the OpenAI / Zhipu / Ark fakes (tests/fakes/media/openai_media.py)."""

from __future__ import annotations

import base64
import hashlib
import io
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
from PIL import Image

from aijobs import errors
from aijobs.providers import openai_media, sim_media
from aijobs.providers.base import MediaResult
from aijobs.providers.openai_media import OpenAIImage, OpenAISpeech
from aijobs.types.common import Media, RemoteFile
from aijobs.types.image import ImageInput
from aijobs.types.speech import SpeechInput
from tests.providers.tasks_helpers import API_KEY, context, farm, fetch, inject

OPENAI_PATH, ZHIPU_PATH, ARK_PATH = "/openai/v1", "/openai/zhipu/api/paas/v4", "/openai/ark/api/v3"
SEEDREAM = "doubao-seedream-3-0-t2i-250415"
TEXT = "The quick brown fox jumps over the lazy dog"


@dataclass
class Fakes:
    """The media fakes and a client: adapters aimed at them, their journal, downloads."""

    http: httpx2.AsyncClient
    url: str

    def image(self, path: str = OPENAI_PATH, preset: str | None = None, **kw: Any) -> OpenAIImage:
        return OpenAIImage(context(self.http, "openai", self.url + path, preset=preset, **kw))

    def speech(self) -> OpenAISpeech:
        return OpenAISpeech(context(self.http, "openai", self.url + OPENAI_PATH))

    async def posts(self) -> list[dict[str, Any]]:
        return [r for r in await farm(self.http, self.url, "requests") if r["method"] == "POST"]

    async def picture(self, item: Media | RemoteFile) -> tuple[Image.Image, str]:
        data, content_type = await fetch(self.http, item)
        image = Image.open(io.BytesIO(data))
        image.load()
        return image, content_type

    async def speak(self, fmt: str, speed: float = 1.0) -> tuple[Media, MediaResult]:
        request = SpeechInput(text=TEXT, voice="nova", format=fmt, speed=speed)
        result = await self.speech().run("tts-1", request)
        [item] = result.items
        assert isinstance(item, Media)
        return item, result


@pytest.fixture
async def fakes(media_fakes: str) -> AsyncIterator[Fakes]:
    async with httpx2.AsyncClient(timeout=30) as http:
        yield Fakes(http, media_fakes)


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


async def test_url_result_is_a_remote_png(fakes: Fakes) -> None:
    result = await fakes.image().run("dall-e-2", ImageInput(prompt="a red fox", size="256x256"))

    [item] = result.items
    assert isinstance(item, RemoteFile)
    assert (item.width, item.height) == (256, 256)
    assert item.content_type is None  # dall-e ignores output_format: the download's type is the truth
    image, content_type = await fakes.picture(item)
    assert (image.format, image.size, content_type) == ("PNG", (256, 256), "image/png")
    assert result.usage.units == 1 and not result.usage.estimated
    [call] = await fakes.posts()
    assert call["path"] == "/openai/v1/images/generations"
    assert call["headers"]["authorization"] == f"Bearer {API_KEY}"
    wire = {"model": "dall-e-2", "prompt": "a red fox", "n": 1, "size": "256x256", "response_format": "url"}
    assert call["json"] == wire


@pytest.mark.parametrize(("fmt", "pil_format"), [("png", "PNG"), ("webp", "WEBP")])
async def test_gpt_image_answers_base64_media_and_tokens(fakes: Fakes, fmt: str, pil_format: str) -> None:
    request = ImageInput(prompt="a lighthouse at dusk", output_format=fmt)
    result = await fakes.image().run("gpt-image-1", request)

    [item] = result.items
    assert isinstance(item, Media)
    assert (item.content_type, item.extension) == (f"image/{fmt}", fmt)
    image, _ = await fakes.picture(item)
    assert (image.format, image.size) == (pil_format, (1024, 1024))
    assert result.usage.units == 1
    assert result.usage.input_tokens > 0 and result.usage.output_tokens == 1056
    [call] = await fakes.posts()
    assert "response_format" not in call["json"]  # gpt-image-1 refuses the field
    assert call["json"]["output_format"] == fmt


async def test_two_images_in_one_call(fakes: Fakes) -> None:
    result = await fakes.image().run("dall-e-2", ImageInput(prompt="owl", n=2, size="256x256"))

    assert len(result.items) == 2 and result.usage.units == 2
    assert len({item.url for item in result.items if isinstance(item, RemoteFile)}) == 2
    [call] = await fakes.posts()
    assert call["json"]["n"] == 2


async def test_dall_e_3_makes_one_image_per_call(fakes: Fakes) -> None:
    result = await fakes.image().run("dall-e-3", ImageInput(prompt="a kite", n=2))

    assert len(result.items) == 2
    calls = await fakes.posts()
    assert len(calls) == 2 and all("n" not in call["json"] for call in calls)


async def test_zhipu_makes_one_image_per_call(fakes: Fakes) -> None:
    request = ImageInput(prompt="山水画", n=2, size="512x512")
    result = await fakes.image(ZHIPU_PATH, "zhipu").run("cogview-4", request)

    assert len(result.items) == 2 and result.usage.units == 2
    for item in result.items:
        image, content_type = await fakes.picture(item)
        assert isinstance(item, RemoteFile) and (image.size, content_type) == ((512, 512), "image/png")
    calls = await fakes.posts()
    assert [c["path"] for c in calls] == [f"{ZHIPU_PATH}/images/generations"] * 2
    assert all(c["json"] == {"model": "cogview-4", "prompt": "山水画", "size": "512x512"} for c in calls)


async def test_ark_seedream_url_and_usage(fakes: Fakes) -> None:
    request = ImageInput(prompt="a tea house", size="512x768")
    result = await fakes.image(ARK_PATH, "doubao").run(SEEDREAM, request)

    [item] = result.items
    assert isinstance(item, RemoteFile)
    assert (item.width, item.height, item.content_type) == (512, 768, None)
    image, content_type = await fakes.picture(item)
    assert (image.format, image.size, content_type) == ("JPEG", (512, 768), "image/jpeg")
    assert (result.usage.units, result.usage.output_tokens) == (1, 512 * 768 // 256)
    [call] = await fakes.posts()
    wire = {"model": SEEDREAM, "prompt": "a tea house", "size": "512x768", "response_format": "url"}
    assert call["json"] == wire


async def test_edit_sends_multipart_with_the_image(fakes: Fakes) -> None:
    source = sim_media.render_image("a cat", 64, 64, "png")
    request = ImageInput(prompt="give it a hat", size="256x256", image=data_url(source))
    result = await fakes.image().run("dall-e-2", request)

    [item] = result.items
    image, _ = await fakes.picture(item)
    assert image.size == (256, 256)
    [call] = await fakes.posts()
    assert call["path"] == "/openai/v1/images/edits" and call["json"] is None
    assert call["headers"]["content-type"].startswith("multipart/form-data; boundary=")
    digest = hashlib.sha256(source).hexdigest()
    sent = {"filename": "image.png", "content_type": "image/png", "bytes": len(source), "sha256": digest}
    assert call["form"]["files"]["image"] == sent
    fields = {
        "model": "dall-e-2",
        "prompt": "give it a hat",
        "n": "1",
        "size": "256x256",
        "response_format": "url",
    }
    assert call["form"]["fields"] == fields


@pytest.mark.parametrize(
    ("path", "preset", "model", "image"),
    [
        (ZHIPU_PATH, "zhipu", "cogview-4", data_url(b"\x89PNG\r\n\x1a\nxx")),  # the preset has no edits
        (OPENAI_PATH, None, "dall-e-3", data_url(b"\x89PNG\r\n\x1a\nxx")),  # nor has the model
        (OPENAI_PATH, None, "dall-e-2", "https://example.com/cat.png"),  # the worker sends data URLs
        (OPENAI_PATH, None, "dall-e-2", "data:image/png;base64,@@not-base64@@"),
    ],
)
async def test_edit_refused(fakes: Fakes, path: str, preset: str | None, model: str, image: str) -> None:
    with pytest.raises(errors.ProviderRejected):
        await fakes.image(path, preset).run(model, ImageInput(prompt="edit", size="1024x1024", image=image))
    assert await fakes.posts() == []


@pytest.mark.parametrize(
    ("path", "preset", "model", "size"),
    [(OPENAI_PATH, None, "dall-e-2", "256x256"), (ZHIPU_PATH, "zhipu", "cogview-4", "512x512"),
     (ARK_PATH, "doubao", SEEDREAM, "512x512")],
)  # fmt: skip
async def test_moderation(fakes: Fakes, path: str, preset: str | None, model: str, size: str) -> None:
    with pytest.raises(errors.ProviderContentFiltered) as caught:
        await fakes.image(path, preset).run(model, ImageInput(prompt="[moderate] something", size=size))
    assert caught.value.code == "provider_content_filtered" and caught.value.status == 400


@pytest.mark.parametrize(
    ("fault", "api_key", "size", "error", "wait_s"),
    [
        (429, API_KEY, "256x256", errors.ProviderRateLimited, 7),
        (
            401,
            API_KEY,
            "256x256",
            errors.ProviderAuth,
            None,
        ),  # the fake echoes part of the key, as OpenAI does
        (None, None, "256x256", errors.ProviderAuth, None),  # no key sent
        (None, API_KEY, "1792x1024", errors.ProviderRejected, None),  # dall-e-2 has no such size
    ],
)
async def test_errors(
    fakes: Fakes, fault: int | None, api_key: str | None, size: str,
    error: type[errors.ProviderError], wait_s: float | None,
) -> None:  # fmt: skip
    if fault:
        await inject(fakes.http, fakes.url, provider="openai", step="submit", status=fault, retry_after=wait_s)  # fmt: skip
    with pytest.raises(error) as caught:
        await fakes.image(api_key=api_key).run("dall-e-2", ImageInput(prompt="x", size=size))
    assert type(caught.value) is error and caught.value.retry_after_s == wait_s
    assert API_KEY not in str(caught.value) and API_KEY not in caught.value.body_excerpt


@pytest.mark.parametrize(
    "answer",
    [{"created": 1, "data": [{"b64_json": "%%% not base64 %%%"}]}, {"created": 1, "data": []},
     {"created": 1, "data": [{"revised_prompt": "x"}]}],
)  # fmt: skip
async def test_unreadable_image_answers_are_bad_responses(answer: dict[str, Any]) -> None:
    transport = httpx2.MockTransport(lambda request: httpx2.Response(200, json=answer))
    async with httpx2.AsyncClient(transport=transport) as client:
        adapter = OpenAIImage(context(client, "openai", "https://api.openai.test/v1"))
        with pytest.raises(errors.ProviderBadResponse):
            await adapter.run("gpt-image-1", ImageInput(prompt="x"))


async def test_wav_has_an_exact_duration_and_a_truthful_header(fakes: Fakes) -> None:
    item, result = await fakes.speak("wav", speed=1.25)

    assert (item.content_type, item.extension) == ("audio/wav", "wav")
    with wave.open(io.BytesIO(item.data)) as wav:  # the fake streams a header claiming 4 GiB of audio
        frames, rate_hz = wav.getnframes(), wav.getframerate()
    assert rate_hz == 24_000 and frames * 2 + 44 == len(item.data)
    assert item.duration_s == pytest.approx(sim_media.speech_seconds(TEXT, 1.25), abs=0.001)
    assert result.usage.units == item.duration_s and not result.usage.estimated
    [call] = await fakes.posts()
    assert call["json"] == {
        "model": "tts-1",
        "input": TEXT,
        "voice": "nova",
        "response_format": "wav",
        "speed": 1.25,
    }


async def test_pcm_duration_from_its_length(fakes: Fakes) -> None:
    item, result = await fakes.speak("pcm")

    assert item.content_type == "audio/pcm"
    assert item.duration_s == pytest.approx(len(item.data) / 48_000, abs=0.001)
    assert item.duration_s == pytest.approx(sim_media.speech_seconds(TEXT, 1.0), abs=0.001)
    assert not result.usage.estimated


async def test_mp3_usage_is_an_estimate(fakes: Fakes) -> None:
    item, result = await fakes.speak("mp3", speed=2.0)

    assert (item.content_type, item.extension, item.duration_s) == ("audio/mpeg", "mp3", None)
    assert result.usage.estimated
    assert result.usage.units == pytest.approx(len(TEXT) / openai_media.CHARS_PER_S / 2.0, abs=0.001)


async def test_an_oversize_answer_is_refused(fakes: Fakes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openai_media, "MAX_SPEECH_BYTES", 10_000)
    with pytest.raises(errors.ProviderBadResponse, match="larger than 10000 bytes"):
        await fakes.speak("wav")


async def test_speech_errors(fakes: Fakes) -> None:
    adapter = fakes.speech()
    with pytest.raises(errors.ProviderRejected) as caught:
        await adapter.run("tts-1", SpeechInput(text="hi", voice="bob"))
    assert caught.value.status == 400 and "voice" in caught.value.body_excerpt
    with pytest.raises(errors.ProviderContentFiltered):
        await adapter.run("tts-1", SpeechInput(text="[moderate] words"))
    await inject(fakes.http, fakes.url, provider="openai", step="submit", status=429, retry_after=2)
    with pytest.raises(errors.ProviderRateLimited) as caught_limit:
        await adapter.run("tts-1", SpeechInput(text="words"))
    assert caught_limit.value.retry_after_s == 2


async def test_a_wav_that_is_not_one_is_a_bad_response() -> None:
    transport = httpx2.MockTransport(lambda request: httpx2.Response(200, content=b"ID3\x04 not a wav"))
    async with httpx2.AsyncClient(transport=transport) as client:
        adapter = OpenAISpeech(context(client, "openai", "https://api.openai.test/v1"))
        with pytest.raises(errors.ProviderBadResponse, match="not a readable WAV"):
            await adapter.run("tts-1", SpeechInput(text="hello", format="wav"))
