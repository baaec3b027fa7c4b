"""MiniMax T2A v2 speech and Hailuo video against their fake (tests/fakes/media/minimax.py)."""

from __future__ import annotations

import io
import wave
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import orjson
import pytest

from aijobs import errors
from aijobs.providers.base import Task
from aijobs.providers.minimax import MiniMaxSpeech, MiniMaxVideo
from aijobs.types.common import RemoteFile
from aijobs.types.speech import SpeechInput
from aijobs.types.video import VideoInput
from tests.providers.tasks_helpers import API_KEY, context, drive, farm, fetch, inject

SPEECH_MODEL = "speech-2.6-hd"
VIDEO_MODEL = "MiniMax-Hailuo-02"
IMAGE = "https://example.com/first.png"


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient() as client:
        yield client


async def render_s(http: httpx2.AsyncClient, fakes: str, seconds: float) -> None:
    (await http.post(f"{fakes}/_media/config", json={"render_s": seconds})).raise_for_status()


def speech(http: httpx2.AsyncClient, fakes: str, **kwargs: Any) -> MiniMaxSpeech:
    return MiniMaxSpeech(context(http, "minimax", fakes + "/minimax", **kwargs))


def video(http: httpx2.AsyncClient, fakes: str, **kwargs: Any) -> MiniMaxVideo:
    return MiniMaxVideo(context(http, "minimax", fakes + "/minimax", **kwargs))


def clean(exc: errors.ProviderError) -> errors.ProviderError:
    """``exc``, after checking our key appears nowhere in it."""
    assert API_KEY not in str(exc) and API_KEY not in exc.body_excerpt
    return exc


async def test_speech_decodes_the_hex_audio_into_a_wav_with_its_length(
    http: httpx2.AsyncClient, media_fakes: str
) -> None:
    result = await speech(http, media_fakes).run(
        SPEECH_MODEL, SpeechInput(text="Hello there, how are you today?", voice="male-qn-qingse", speed=1.5)
    )
    (item,) = result.items
    assert not isinstance(item, RemoteFile)
    assert (item.content_type, item.extension) == ("audio/wav", "wav")
    with wave.open(io.BytesIO(item.data)) as wav:
        seconds = wav.getnframes() / wav.getframerate()
        assert (wav.getnchannels(), wav.getsampwidth()) == (1, 2)
    assert item.duration_s == pytest.approx(seconds, abs=0.001)
    assert result.usage.units == item.duration_s and result.model == SPEECH_MODEL
    (sent,) = await farm(http, media_fakes, "requests")
    assert sent["path"] == "/minimax/v1/t2a_v2"
    assert sent["headers"]["authorization"] == f"Bearer {API_KEY}"
    assert sent["json"] == {
        "model": SPEECH_MODEL,
        "text": "Hello there, how are you today?",
        "stream": False,
        "voice_setting": {"voice_id": "male-qn-qingse", "speed": 1.5, "vol": 1, "pitch": 0},
        "audio_setting": {"sample_rate": 32000, "bitrate": 128000, "format": "wav", "channel": 1},
        "output_format": "hex",
    }


async def test_speech_pcm_is_raw_samples_labelled_as_such(http: httpx2.AsyncClient, media_fakes: str) -> None:
    result = await speech(http, media_fakes).run(
        SPEECH_MODEL, SpeechInput(text="one two three", format="pcm")
    )
    (item,) = result.items
    assert not isinstance(item, RemoteFile)
    assert (item.content_type, item.extension) == ("audio/pcm", "pcm")
    assert not item.data.startswith(b"RIFF")
    assert item.duration_s == pytest.approx(len(item.data) / 2 / 16_000, abs=0.001)


@pytest.mark.parametrize(
    ("fields", "why"), [({"format": "opus"}, "opus"), ({"format": "aac"}, "aac"), ({"speed": 3.0}, "speed")]
)
async def test_speech_refuses_what_t2a_cannot_do_before_sending(
    http: httpx2.AsyncClient, media_fakes: str, fields: dict[str, Any], why: str
) -> None:
    with pytest.raises(errors.ProviderRejected, match=why):
        await speech(http, media_fakes).run(SPEECH_MODEL, SpeechInput(text="hello", **fields))
    assert await farm(http, media_fakes, "requests") == []


async def test_speech_with_sensitive_text_is_content_filtered(
    http: httpx2.AsyncClient, media_fakes: str
) -> None:
    with pytest.raises(errors.ProviderContentFiltered) as caught:
        await speech(http, media_fakes).run(SPEECH_MODEL, SpeechInput(text="say [moderate] this"))
    assert clean(caught.value).code == "provider_content_filtered"
    assert "1026" in caught.value.message


@pytest.mark.parametrize(
    ("status", "cls", "code"),
    [
        (429, errors.ProviderRateLimited, "1002"),
        (401, errors.ProviderAuth, "1004"),
        (402, errors.ProviderAuth, "1008"),
        (400, errors.ProviderRejected, "2013"),
        (500, errors.ProviderUnavailable, "1013"),
        (504, errors.ProviderTimeout, "1001"),
        (503, errors.ProviderUnavailable, "503"),
    ],
)
async def test_speech_errors_in_base_resp_map_to_our_errors(
    http: httpx2.AsyncClient, media_fakes: str, status: int, cls: type[errors.ProviderError], code: str
) -> None:
    await inject(http, media_fakes, provider="minimax", step="submit", status=status)
    with pytest.raises(cls) as caught:
        await speech(http, media_fakes).run(SPEECH_MODEL, SpeechInput(text="hello"))
    assert code in clean(caught.value).message


async def test_speech_without_a_key_is_an_auth_error(http: httpx2.AsyncClient, media_fakes: str) -> None:
    with pytest.raises(errors.ProviderAuth, match="1004"):
        await speech(http, media_fakes, api_key=None).run(SPEECH_MODEL, SpeechInput(text="hello"))


@pytest.mark.parametrize("audio", ["not hex at all", None, ""])
async def test_speech_answer_without_hex_audio_is_a_bad_response(audio: str | None) -> None:
    answer = {"data": {"audio": audio, "status": 2}, "extra_info": {"audio_length": 900}, "base_resp": {}}

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=orjson.dumps(answer))

    async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as client:
        with pytest.raises(errors.ProviderBadResponse):
            await speech(client, "http://minimax.test").run(SPEECH_MODEL, SpeechInput(text="hello"))


async def test_video_goes_create_query_retrieve_and_the_file_downloads(
    http: httpx2.AsyncClient, media_fakes: str
) -> None:
    await render_s(http, media_fakes, 0.9)
    task, polls = await drive(
        video(http, media_fakes), VIDEO_MODEL, VideoInput(prompt="a red fox", duration_s=5)
    )
    raw = [poll.raw_status for poll in polls]
    assert raw[0] == "Preparing" and "Queueing" in raw and "Processing" in raw and raw[-1] == "Success"
    assert raw == sorted(raw, key=["Preparing", "Queueing", "Processing", "Success"].index)
    expected = {"Preparing": "queued", "Queueing": "queued", "Processing": "running", "Success": "succeeded"}
    assert all(poll.state == expected[poll.raw_status] for poll in polls)
    assert task.data == {"duration_s": 6}
    done = polls[-1]
    (output,) = done.outputs
    assert isinstance(output, RemoteFile)
    assert output.url.startswith(media_fakes + "/files/")
    assert (output.content_type, output.width, output.height, output.duration_s) == (
        "video/mp4",
        1366,
        768,
        6,
    )
    assert done.usage is not None and done.usage.units == 6
    data, content_type = await fetch(http, output)
    assert data[4:8] == b"ftyp" and len(data) == 65_536 and content_type == "video/mp4"
    journal = await farm(http, media_fakes, "requests")
    paths = [entry["path"] for entry in journal]
    assert paths[0] == "/minimax/v1/video_generation"
    assert journal[0]["json"] == {
        "model": VIDEO_MODEL,
        "prompt": "a red fox",
        "duration": 6,
        "resolution": "768P",
    }
    assert paths.count("/minimax/v1/files/retrieve") == 1 and paths[-1] == "/minimax/v1/files/retrieve"
    assert f"task_id={task.id}" in journal[1]["query"]


@pytest.mark.parametrize(
    ("fields", "duration", "resolution"),
    [
        ({"duration_s": 10, "resolution": "480p", "image": IMAGE}, 10, "512P"),
        ({"duration_s": 1, "resolution": "1080p"}, 6, "1080P"),
        ({"duration_s": 7, "resolution": "720p"}, 10, "768P"),
    ],
)
async def test_video_submit_picks_hailuo_durations_and_resolutions(
    http: httpx2.AsyncClient, media_fakes: str, fields: dict[str, Any], duration: int, resolution: str
) -> None:
    submitted = await video(http, media_fakes).run(VIDEO_MODEL, VideoInput(prompt="waves", **fields))
    (sent,) = await farm(http, media_fakes, "requests")
    assert (sent["json"]["duration"], sent["json"]["resolution"]) == (duration, resolution)
    assert sent["json"].get("first_frame_image") == fields.get("image")
    assert submitted.task.data == {"duration_s": duration}


async def test_video_minimax_refuses_a_long_1080p_clip(http: httpx2.AsyncClient, media_fakes: str) -> None:
    with pytest.raises(errors.ProviderRejected, match="2013") as caught:
        await video(http, media_fakes).run(
            VIDEO_MODEL, VideoInput(prompt="x", duration_s=8, resolution="1080p")
        )
    clean(caught.value)


async def test_video_longer_than_ten_seconds_is_refused_before_sending(
    http: httpx2.AsyncClient, media_fakes: str
) -> None:
    with pytest.raises(errors.ProviderRejected, match="at most 10 s"):
        await video(http, media_fakes).run(VIDEO_MODEL, VideoInput(prompt="x", duration_s=11))
    assert await farm(http, media_fakes, "requests") == []


@pytest.mark.parametrize(
    ("marker", "raw", "cls"),
    [
        ("[fail]", "Fail", errors.ProviderUnavailable),
        ("[moderate]", "Fail", errors.ProviderContentFiltered),
        ("[expire]", "not_found", errors.ProviderUnavailable),
    ],
)
async def test_video_failures_end_the_task_with_the_right_error(
    http: httpx2.AsyncClient, media_fakes: str, marker: str, raw: str, cls: type[errors.ProviderError]
) -> None:
    await render_s(http, media_fakes, 0.3)
    _, polls = await drive(video(http, media_fakes), VIDEO_MODEL, VideoInput(prompt=f"a cat {marker}"))
    last = polls[-1]
    assert (last.state, last.raw_status, last.outputs) == ("failed", raw, [])
    assert type(last.error) is cls
    clean(last.error)
    paths = [entry["path"] for entry in await farm(http, media_fakes, "requests")]
    assert "/minimax/v1/files/retrieve" not in paths


async def test_video_unknown_task_is_gone(http: httpx2.AsyncClient, media_fakes: str) -> None:
    poll = await video(http, media_fakes).poll(VIDEO_MODEL, Task("123456789", {"duration_s": 6}))
    assert (poll.state, poll.raw_status) == ("failed", "not_found")
    assert isinstance(poll.error, errors.ProviderUnavailable) and "no longer exists" in poll.error.message


@pytest.mark.parametrize(
    ("status", "cls"), [(500, errors.ProviderUnavailable), (429, errors.ProviderRateLimited)]
)
async def test_video_poll_fault_raises_and_the_next_poll_works(
    http: httpx2.AsyncClient, media_fakes: str, status: int, cls: type[errors.ProviderError]
) -> None:
    adapter = video(http, media_fakes)
    submitted = await adapter.run(VIDEO_MODEL, VideoInput(prompt="a boat"))
    await inject(http, media_fakes, provider="minimax", step="poll", status=status)
    with pytest.raises(cls) as caught:
        await adapter.poll(VIDEO_MODEL, submitted.task)
    clean(caught.value)
    poll = await adapter.poll(VIDEO_MODEL, submitted.task)
    assert poll.state in ("queued", "running") and poll.error is None


async def test_video_submit_rate_limited_creates_no_task(http: httpx2.AsyncClient, media_fakes: str) -> None:
    await inject(http, media_fakes, provider="minimax", step="submit", status=429)
    with pytest.raises(errors.ProviderRateLimited, match="1002") as caught:
        await video(http, media_fakes).run(VIDEO_MODEL, VideoInput(prompt="a boat"))
    clean(caught.value)
    assert await farm(http, media_fakes) == []


async def test_video_has_no_cancel(http: httpx2.AsyncClient, media_fakes: str) -> None:
    adapter = video(http, media_fakes)
    submitted = await adapter.run(VIDEO_MODEL, VideoInput(prompt="a boat"))
    assert await adapter.cancel(VIDEO_MODEL, submitted.task) is False
    assert [entry["method"] for entry in await farm(http, media_fakes, "requests")] == ["POST"]
