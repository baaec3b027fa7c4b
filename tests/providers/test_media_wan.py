"""Wan video and text-to-image on DashScope's async task API, against its fake."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
from pydantic import BaseModel

from aijobs import errors
from aijobs.providers.base import ProviderContext
from aijobs.providers.tasks import Poll
from aijobs.providers.wan import WanImage, WanVideo, WanVideoOptions
from aijobs.routing.config import ProviderConfig
from aijobs.types.common import RemoteFile
from aijobs.types.image import ImageInput
from aijobs.types.video import VideoInput
from tests.providers.tasks_helpers import API_KEY, context, drive, farm, fetch, inject

T2V, I2V, T2I = "wan2.5-t2v-preview", "wan2.2-i2v-plus", "wan2.2-t2i-flash"
VIDEO_PATH = "/dashscope/api/v1/services/aigc/video-generation/video-synthesis"
IMAGE_PATH = "/dashscope/api/v1/services/aigc/text2image/image-synthesis"


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient() as client:
        yield client


@pytest.fixture
async def fakes(http: httpx2.AsyncClient, media_fakes: str) -> str:
    """The media fakes with a short render time and small outputs."""
    config = {"render_s": 0.3, "output_bytes": 4096}
    (await http.post(f"{media_fakes}/_media/config", json=config)).raise_for_status()
    return media_fakes


def wan_video(http: httpx2.AsyncClient, fakes_url: str, suffix: str = "", **options: Any) -> WanVideo:
    model_options: dict[str, BaseModel] | None = {T2V: WanVideoOptions(**options)} if options else None
    return WanVideo(context(http, "dashscope", f"{fakes_url}/dashscope{suffix}", model_options=model_options))


def wan_image(http: httpx2.AsyncClient, fakes_url: str) -> WanImage:
    return WanImage(context(http, "dashscope", f"{fakes_url}/dashscope"))


def video(prompt: str = "a lantern drifts over a river", **fields: Any) -> VideoInput:
    return VideoInput(prompt=prompt, **fields)


def image(prompt: str = "a paper crane on a desk", **fields: Any) -> ImageInput:
    return ImageInput(prompt=prompt, **fields)


async def sent(http: httpx2.AsyncClient, fakes_url: str, path: str) -> list[dict[str, Any]]:
    return [r for r in await farm(http, fakes_url, "requests") if r["path"] == path]


def raw_statuses(polls: list[Poll]) -> list[str]:
    """Each raw status once, in the order first seen."""
    return list(dict.fromkeys(p.raw_status for p in polls))


async def test_a_video_runs_from_pending_to_a_download(http: httpx2.AsyncClient, fakes: str) -> None:
    await http.post(f"{fakes}/_media/config", json={"render_s": 0.6})  # long enough to see PENDING
    task, polls = await drive(wan_video(http, fakes), T2V, video(duration_s=5))
    assert raw_statuses(polls) == ["PENDING", "RUNNING", "SUCCEEDED"]
    assert polls[0].state == "queued" and polls[-1].state == "succeeded"
    assert task.data["kind"] == "video"
    end = polls[-1]
    assert end.usage is not None and end.usage.units == 5.0
    (item,) = end.outputs
    assert isinstance(item, RemoteFile) and item.headers == ()
    assert (item.content_type, item.extension, item.width, item.height, item.duration_s) == (
        "video/mp4", "mp4", 1280, 720, 5.0,
    )  # fmt: skip
    assert item.url == f"{fakes}/files/{task.id}/0.mp4"  # at the server's root, not under /dashscope
    data, content_type = await fetch(http, item)
    assert content_type == "video/mp4" and len(data) == 4096 and data[4:12] == b"ftypmp42"


async def test_the_submit_is_async_and_shaped_like_dashscopes(http: httpx2.AsyncClient, fakes: str) -> None:
    submitted = await wan_video(http, fakes, prompt_extend=False).run(T2V, video(duration_s=7))
    (request,) = await sent(http, fakes, VIDEO_PATH)
    assert request["headers"]["x-dashscope-async"] == "enable"
    assert request["headers"]["authorization"] == f"Bearer {API_KEY}"
    assert request["json"] == {
        "model": T2V,
        "input": {"prompt": "a lantern drifts over a river"},
        "parameters": {"duration": 10, "size": "1280*720", "prompt_extend": False},
    }
    assert submitted.task.data["duration_s"] == 10


async def test_a_base_url_ending_in_api_v1_works_too(http: httpx2.AsyncClient, fakes: str) -> None:
    submitted = await wan_video(http, fakes, "/api/v1").run(T2V, video())
    assert (await wan_video(http, fakes, "/api/v1").poll(T2V, submitted.task)).raw_status == "PENDING"


@pytest.mark.parametrize(
    ("aspect_ratio", "resolution", "size"),
    [
        ("9:16", "720p", "720*1280"),
        ("1:1", "720p", "960*960"),
        ("4:3", "1080p", "1632*1248"),
        ("16:9", "480p", "832*480"),
        ("3:4", "720p", "832*1088"),
    ],
)
async def test_sizes_are_dashscopes_documented_ones(
    http: httpx2.AsyncClient, fakes: str, aspect_ratio: str, resolution: str, size: str
) -> None:
    submitted = await wan_video(http, fakes).run(T2V, video(aspect_ratio=aspect_ratio, resolution=resolution))
    (request,) = await sent(http, fakes, VIDEO_PATH)
    assert request["json"]["parameters"]["size"] == size
    assert (submitted.task.data["width"], submitted.task.data["height"]) == tuple(map(int, size.split("*")))


@pytest.mark.parametrize(("aspect_ratio", "resolution"), [("21:9", "720p"), ("4:3", "480p")])
async def test_a_shape_wan_has_no_size_for_is_refused_before_sending(
    http: httpx2.AsyncClient, fakes: str, aspect_ratio: str, resolution: str
) -> None:
    with pytest.raises(errors.ProviderRejected):
        await wan_video(http, fakes).run(T2V, video(aspect_ratio=aspect_ratio, resolution=resolution))
    assert await farm(http, fakes, "requests") == []


@pytest.mark.parametrize(
    ("asked_s", "durations_s", "sent_s"), [(3, (5, 10), 5), (12, (5, 10), 10), (8, (5,), 5)]
)
async def test_durations_round_up_to_what_the_model_renders(
    http: httpx2.AsyncClient, fakes: str, asked_s: int, durations_s: tuple[int, ...], sent_s: int
) -> None:
    await wan_video(http, fakes, durations_s=durations_s).run(T2V, video(duration_s=asked_s))
    (request,) = await sent(http, fakes, VIDEO_PATH)
    assert request["json"]["parameters"]["duration"] == sent_s


async def test_image_to_video_passes_the_image_as_given(http: httpx2.AsyncClient, fakes: str) -> None:
    frame = "https://example.com/first-frame.png"
    _, polls = await drive(wan_video(http, fakes), I2V, video(image=frame, resolution="1080p"))
    (request,) = await sent(http, fakes, VIDEO_PATH)
    assert request["json"]["input"] == {"prompt": "a lantern drifts over a river", "img_url": frame}
    assert request["json"]["parameters"] == {"duration": 5, "resolution": "1080P"}
    (item,) = polls[-1].outputs
    assert isinstance(item, RemoteFile) and (item.width, item.height) == (None, None)  # the image's shape


async def test_two_images_come_back_as_two_pngs(http: httpx2.AsyncClient, fakes: str) -> None:
    _, polls = await drive(wan_image(http, fakes), T2I, image(n=2, size="1024x768"))
    (request,) = await sent(http, fakes, IMAGE_PATH)
    assert request["headers"]["x-dashscope-async"] == "enable"
    assert request["json"] == {
        "model": T2I,
        "input": {"prompt": "a paper crane on a desk"},
        "parameters": {"size": "1024*768", "n": 2},
    }
    end = polls[-1]
    assert (end.state, end.raw_status) == ("succeeded", "SUCCEEDED")
    assert end.usage is not None and end.usage.units == 2.0
    assert len(end.outputs) == 2 and all(isinstance(o, RemoteFile) for o in end.outputs)
    files = [await fetch(http, item) for item in end.outputs]
    assert all(
        content_type == "image/png" and data[:8] == b"\x89PNG\r\n\x1a\n" for data, content_type in files
    )
    assert files[0][0] != files[1][0]
    assert {(o.width, o.height) for o in end.outputs if isinstance(o, RemoteFile)} == {(1024, 768)}


@pytest.mark.parametrize(
    "fields", [{"n": 5}, {"size": "256x256"}, {"size": "2048x1024"}, {"image": "https://example.com/a.png"}]
)
async def test_what_wan_images_cannot_take_is_refused_before_sending(
    http: httpx2.AsyncClient, fakes: str, fields: dict[str, Any]
) -> None:
    with pytest.raises(errors.ProviderRejected):
        await wan_image(http, fakes).run(T2I, image(**fields))
    assert await farm(http, fakes, "requests") == []


@pytest.mark.parametrize("kind", ["video", "image"])
@pytest.mark.parametrize(
    ("marker", "raw_status", "code", "says"),
    [
        ("[fail]", "FAILED", "provider_unavailable", "InternalError"),
        ("[moderate]", "FAILED", "provider_content_filtered", "DataInspectionFailed"),
        ("[expire]", "UNKNOWN", "provider_unavailable", "no longer exists"),
    ],
)
async def test_unhappy_endings(
    http: httpx2.AsyncClient, fakes: str, kind: str, marker: str, raw_status: str, code: str, says: str
) -> None:
    if kind == "video":
        _, polls = await drive(wan_video(http, fakes), T2V, video(f"a lantern {marker}"))
    else:
        _, polls = await drive(wan_image(http, fakes), T2I, image(f"a crane {marker}"))
    end = polls[-1]
    assert (end.state, end.raw_status) == ("failed", raw_status)
    assert end.error is not None and end.error.code == code and says in end.error.message
    assert API_KEY not in end.error.message


async def test_a_rate_limited_submit_says_how_long_to_wait(http: httpx2.AsyncClient, fakes: str) -> None:
    await inject(http, fakes, provider="dashscope", step="submit", status=429, retry_after=12)
    with pytest.raises(errors.ProviderRateLimited) as limited:
        await wan_image(http, fakes).run(T2I, image())
    assert limited.value.retry_after_s == 12.0 and "Throttling" in limited.value.message
    assert await farm(http, fakes) == []
    assert API_KEY not in limited.value.message and API_KEY not in limited.value.body_excerpt


async def test_a_failed_poll_raises_and_the_next_one_works(http: httpx2.AsyncClient, fakes: str) -> None:
    adapter = wan_video(http, fakes)
    submitted = await adapter.run(T2V, video())
    await inject(http, fakes, provider="dashscope", step="poll", status=500)
    with pytest.raises(errors.ProviderUnavailable) as failed:
        await adapter.poll(T2V, submitted.task)
    assert failed.value.status == 500 and API_KEY not in failed.value.message
    assert (await adapter.poll(T2V, submitted.task)).raw_status in ("PENDING", "RUNNING")


async def test_a_submit_sent_but_unanswered_is_unknown(http: httpx2.AsyncClient, fakes: str) -> None:
    config = ProviderConfig(kind="dashscope", base_url=f"{fakes}/dashscope", read_timeout_s=0.2)
    adapter = WanVideo(ProviderContext("dashscope", config, API_KEY, http, {}))
    await inject(http, fakes, provider="dashscope", step="submit", delay_s=0.6)
    with pytest.raises(errors.SubmitUnknown):
        await adapter.run(T2V, video())
    async with asyncio.timeout(5):  # the fake answers late: the task exists upstream all the same
        while True:
            if await farm(http, fakes):
                break
            await asyncio.sleep(0.05)


async def test_a_pending_task_cancels_and_a_running_one_does_not(
    http: httpx2.AsyncClient, fakes: str
) -> None:
    await http.post(f"{fakes}/_media/config", json={"render_s": 3.0})
    adapter = wan_video(http, fakes)
    pending = (await adapter.run(T2V, video())).task
    assert await adapter.cancel(T2V, pending) is True
    canceled = await adapter.poll(T2V, pending)
    assert (canceled.state, canceled.raw_status) == ("canceled", "CANCELED")
    await http.post(f"{fakes}/_media/config", json={"render_s": 0.3})
    running = (await adapter.run(T2V, video("a lantern [hang]"))).task
    await asyncio.sleep(0.2)
    assert (await adapter.poll(T2V, running)).raw_status == "RUNNING"
    assert await adapter.cancel(T2V, running) is False
    assert [t["canceled"] for t in await farm(http, fakes)] == [True, False]


async def test_the_fake_refuses_synchronous_calls_and_missing_keys(
    http: httpx2.AsyncClient, fakes: str
) -> None:
    body = {"model": T2V, "input": {"prompt": "x"}, "parameters": {"size": "1280*720"}}
    sync = await http.post(f"{fakes}{VIDEO_PATH}", json=body, headers={"Authorization": f"Bearer {API_KEY}"})
    assert sync.status_code == 403 and "synchronous" in sync.json()["message"]
    adapter = WanVideo(context(http, "dashscope", f"{fakes}/dashscope", api_key=None))
    with pytest.raises(errors.ProviderAuth) as refused:
        await adapter.run(T2V, video())
    assert refused.value.status == 401 and await farm(http, fakes) == []
