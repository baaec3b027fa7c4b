"""Veo on the Gemini API against its fake: submit, poll the operation, download with the key."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
from pydantic import BaseModel

from aijobs import errors
from aijobs.providers.base import ProviderContext
from aijobs.providers.veo import VeoOptions, VeoVideo
from aijobs.routing.config import ProviderConfig
from aijobs.types.common import RemoteFile
from aijobs.types.video import VideoInput
from tests.providers.tasks_helpers import API_KEY, context, drive, farm, fetch, inject

MODEL = "veo-3.0-fast-generate-001"
FRAME = b"\x89PNG\r\n\x1a\nfirst-frame"


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient() as client:
        yield client


@pytest.fixture
async def fast(http: httpx2.AsyncClient, media_fakes: str) -> str:
    """The media fakes with a short render time and small outputs."""
    config = {"render_s": 0.3, "output_bytes": 4096}
    (await http.post(f"{media_fakes}/_media/config", json=config)).raise_for_status()
    return media_fakes


def veo(http: httpx2.AsyncClient, fakes_url: str, **options: Any) -> VeoVideo:
    model_options: dict[str, BaseModel] | None = {MODEL: VeoOptions(**options)} if options else None
    return VeoVideo(context(http, "gemini", f"{fakes_url}/veo", model_options=model_options))


def video(prompt: str = "a heron lands on a lake", **fields: Any) -> VideoInput:
    return VideoInput(prompt=prompt, **fields)


async def submitted_bodies(http: httpx2.AsyncClient, fakes_url: str) -> list[dict[str, Any]]:
    journal = await farm(http, fakes_url, "requests")
    return [r for r in journal if r["method"] == "POST" and r["path"].endswith(":predictLongRunning")]


async def test_a_video_runs_to_a_download_that_needs_the_key(http: httpx2.AsyncClient, fast: str) -> None:
    task, polls = await drive(veo(http, fast), MODEL, video(duration_s=5))
    assert task.data["name"] == f"models/{MODEL}/operations/{task.id}"
    assert [p.raw_status for p in polls[:1]] == ["running"] and polls[0].state == "running"
    done = polls[-1]
    assert (done.state, done.raw_status, done.error) == ("succeeded", "done", None)
    assert done.usage is not None and done.usage.units == 6.0  # 5 s asked, 6 s is the next Veo renders
    (item,) = done.outputs
    assert isinstance(item, RemoteFile)
    assert (item.content_type, item.extension, item.width, item.height, item.duration_s) == (
        "video/mp4", "mp4", 1280, 720, 6.0,
    )  # fmt: skip
    assert item.url.startswith(f"{fast}/veo/v1beta/files/") and item.url.endswith(":download?alt=media")
    assert item.headers == (("x-goog-api-key", API_KEY),)
    data, content_type = await fetch(http, item)
    assert content_type == "video/mp4" and len(data) == 4096 and data[4:12] == b"ftypmp42"
    keyless = await http.get(item.url)
    assert keyless.status_code == 403 and keyless.json()["error"]["status"] == "PERMISSION_DENIED"


async def test_the_submit_body_follows_veos_shape(http: httpx2.AsyncClient, fast: str) -> None:
    adapter = veo(http, fast, person_generation="allow_adult")
    await adapter.run(MODEL, video(aspect_ratio="9:16", resolution="1080p", duration_s=5))
    (sent,) = await submitted_bodies(http, fast)
    assert sent["path"] == f"/veo/v1beta/models/{MODEL}:predictLongRunning"
    assert sent["headers"]["x-goog-api-key"] == API_KEY and "authorization" not in sent["headers"]
    assert sent["json"] == {
        "instances": [{"prompt": "a heron lands on a lake"}],
        "parameters": {
            "aspectRatio": "9:16", "durationSeconds": 8, "resolution": "1080p",
            "personGeneration": "allow_adult",
        },
    }  # fmt: skip


@pytest.mark.parametrize(
    ("duration_s", "resolution", "sent_s", "sent_resolution"),
    [(1, "720p", 4, "720p"), (4, "720p", 4, "720p"), (7, "480p", 8, "720p"), (30, "720p", 8, "720p")],
)
async def test_durations_round_up_to_what_veo_renders(
    http: httpx2.AsyncClient, fast: str, duration_s: int, resolution: str, sent_s: int, sent_resolution: str
) -> None:
    submitted = await veo(http, fast).run(MODEL, video(duration_s=duration_s, resolution=resolution))
    (sent,) = await submitted_bodies(http, fast)
    assert sent["json"]["parameters"]["durationSeconds"] == sent_s == submitted.task.data["duration_s"]
    assert sent["json"]["parameters"]["resolution"] == sent_resolution


async def test_a_first_frame_goes_inline_from_a_data_url(http: httpx2.AsyncClient, fast: str) -> None:
    encoded = base64.b64encode(FRAME).decode()
    await veo(http, fast).run(MODEL, video(image=f"data:image/png;base64,{encoded}"))
    (sent,) = await submitted_bodies(http, fast)
    assert sent["json"]["instances"][0]["image"] == {"bytesBase64Encoded": encoded, "mimeType": "image/png"}


@pytest.mark.parametrize(
    "request_fields",
    [{"image": "https://example.com/frame.png"}, {"aspect_ratio": "1:1"}, {"aspect_ratio": "21:9"}],
)
async def test_what_veo_cannot_take_is_refused_before_sending(
    http: httpx2.AsyncClient, fast: str, request_fields: dict[str, Any]
) -> None:
    with pytest.raises(errors.ProviderRejected) as refused:
        await veo(http, fast).run(MODEL, video(**request_fields))
    assert "Veo" in refused.value.message
    assert await farm(http, fast, "requests") == []


@pytest.mark.parametrize(
    ("marker", "raw_status", "code", "says"),
    [
        ("[fail]", "error", "provider_unavailable", "INTERNAL"),
        ("[moderate]", "done", "provider_content_filtered", "usage policies"),
        ("[expire]", "not_found", "provider_unavailable", "no longer exists"),
    ],
)
async def test_unhappy_endings(
    http: httpx2.AsyncClient, fast: str, marker: str, raw_status: str, code: str, says: str
) -> None:
    _, polls = await drive(veo(http, fast), MODEL, video(f"a heron {marker}"))
    end = polls[-1]
    assert (end.state, end.raw_status) == ("failed", raw_status)
    assert end.error is not None and end.error.code == code and says in end.error.message
    assert end.outputs == [] and API_KEY not in end.error.message


async def test_a_rate_limited_submit_says_how_long_to_wait(http: httpx2.AsyncClient, fast: str) -> None:
    await inject(http, fast, provider="veo", step="submit", status=429, retry_after=7)
    with pytest.raises(errors.ProviderRateLimited) as limited:
        await veo(http, fast).run(MODEL, video())
    assert limited.value.retry_after_s == 7.0 and limited.value.status == 429
    assert await farm(http, fast) == []
    assert API_KEY not in limited.value.message and API_KEY not in limited.value.body_excerpt


async def test_a_failed_poll_raises_and_the_next_one_works(http: httpx2.AsyncClient, fast: str) -> None:
    adapter = veo(http, fast)
    submitted = await adapter.run(MODEL, video())
    await inject(http, fast, provider="veo", step="poll", status=500)
    with pytest.raises(errors.ProviderUnavailable) as failed:
        await adapter.poll(MODEL, submitted.task)
    assert failed.value.status == 500 and API_KEY not in failed.value.message
    assert (await adapter.poll(MODEL, submitted.task)).state in ("running", "succeeded")


async def test_a_submit_sent_but_unanswered_is_unknown(http: httpx2.AsyncClient, fast: str) -> None:
    config = ProviderConfig(kind="gemini", base_url=f"{fast}/veo", read_timeout_s=0.2)
    adapter = VeoVideo(ProviderContext("veo", config, API_KEY, http, {}))
    await inject(http, fast, provider="veo", step="submit", delay_s=0.6)
    with pytest.raises(errors.SubmitUnknown):
        await adapter.run(MODEL, video())
    async with asyncio.timeout(5):  # the fake answers late: the task exists upstream all the same
        while True:
            if await farm(http, fast):
                break
            await asyncio.sleep(0.05)


async def test_without_a_key_google_refuses(http: httpx2.AsyncClient, fast: str) -> None:
    adapter = VeoVideo(context(http, "gemini", f"{fast}/veo", api_key=None))
    with pytest.raises(errors.ProviderAuth) as refused:
        await adapter.run(MODEL, video())
    assert refused.value.status == 403


async def test_the_key_goes_only_to_the_apis_own_host(http: httpx2.AsyncClient, fast: str) -> None:
    adapter = veo(http, fast)
    assert adapter._download_headers(f"{fast}/veo/v1beta/files/x:download?alt=media")
    assert adapter._download_headers("https://elsewhere.example/v1beta/files/x:download?alt=media") == ()


async def test_veo_has_no_cancel(http: httpx2.AsyncClient, fast: str) -> None:
    adapter = veo(http, fast)
    submitted = await adapter.run(MODEL, video())
    assert await adapter.cancel(MODEL, submitted.task) is False
    (task,) = await farm(http, fast)
    assert task["canceled"] is False


async def test_operation_names_without_the_model_are_accepted_and_polled(
    http: httpx2.AsyncClient, fast: str
) -> None:
    (
        await http.post(f"{fast}/_media/config", json={"options": {"veo_operation_names": "short"}})
    ).raise_for_status()
    task, polls = await drive(veo(http, fast), MODEL, video(duration_s=4))
    assert task.data["name"] == f"operations/{task.id}"
    assert polls[-1].state == "succeeded" and len(polls[-1].outputs) == 1
    polled = [r["path"] for r in await farm(http, fast, "requests") if r["method"] == "GET"]
    assert polled and set(polled[:-1]) == {f"/veo/v1beta/operations/{task.id}"}  # then the download


@pytest.mark.parametrize(
    "name", ["operations/", "models/veo/operations", "tunedModels/x/operations/1", "op/1"]
)
async def test_a_submit_answer_naming_no_operation_is_an_unknown_outcome(
    http: httpx2.AsyncClient, fast: str, name: str
) -> None:
    await inject(http, fast, provider="veo", step="submit", body=f'{{"name": "{name}"}}')
    with pytest.raises(errors.SubmitUnknown) as caught:
        await veo(http, fast).run(MODEL, video())
    assert "names no operation" in caught.value.message
    assert len(await submitted_bodies(http, fast)) == 1 and len(await farm(http, fast)) == 1
