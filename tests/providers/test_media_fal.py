"""fal's queue, image and video models, against its fake (tests/fakes/media/fal.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest

from aijobs import errors
from aijobs.providers.base import Task
from aijobs.providers.fal import FalImage, FalVideo
from aijobs.providers.tasks import Poll
from aijobs.types.common import RemoteFile
from aijobs.types.image import ImageInput
from aijobs.types.video import VideoInput
from tests.providers.canned import canned_server
from tests.providers.tasks_helpers import API_KEY, context, drive, farm, fetch, inject

IMAGE_MODEL = "fal-ai/flux/dev"
VIDEO_MODEL = "fal-ai/kling-video/v2.1/standard/text-to-video"
I2V_MODEL = "fal-ai/kling-video/v2.1/standard/image-to-video"
IMAGE = "https://example.com/first-frame.png"


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient() as client:
        yield client


def fal_image(http: httpx2.AsyncClient, fakes: str, **kwargs: Any) -> FalImage:
    return FalImage(context(http, "fal", fakes + "/fal", **kwargs))


def fal_video(http: httpx2.AsyncClient, fakes: str, **kwargs: Any) -> FalVideo:
    return FalVideo(context(http, "fal", fakes + "/fal", **kwargs))


async def render_s(http: httpx2.AsyncClient, fakes: str, seconds: float) -> None:
    (await http.post(f"{fakes}/_media/config", json={"render_s": seconds})).raise_for_status()


def clean(exc: errors.ProviderError) -> errors.ProviderError:
    """``exc``, after checking our key appears nowhere in it."""
    assert API_KEY not in str(exc) and API_KEY not in exc.body_excerpt
    return exc


def raw_statuses(polls: list[Poll]) -> list[str]:
    """The provider's status words, each run of repeats once."""
    return [p.raw_status for i, p in enumerate(polls) if i == 0 or polls[i - 1].raw_status != p.raw_status]


async def upstream(http: httpx2.AsyncClient, fakes: str, task: Task) -> dict[str, Any]:
    [found] = [t for t in await farm(http, fakes) if t["id"] == task.id]
    return dict(found)


async def test_images_go_in_queue_in_progress_completed_and_download(
    http: httpx2.AsyncClient, media_fakes: str
) -> None:
    task, polls = await drive(
        fal_image(http, media_fakes), IMAGE_MODEL, ImageInput(prompt="a quiet harbour", n=2)
    )
    app_url = f"{media_fakes}/fal/fal-ai/flux/requests/{task.id}"  # the app, not the model's full path
    assert task.data == {
        "status_url": f"{app_url}/status",
        "response_url": app_url,
        "cancel_url": f"{app_url}/cancel",
    }
    assert raw_statuses(polls) == ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
    assert [p.state for p in polls[:1]] == ["queued"] and "running" in {p.state for p in polls}
    done = polls[-1]
    assert done.state == "succeeded" and done.usage is not None and done.usage.units == 2
    assert len(done.outputs) == 2
    for image in done.outputs:
        assert isinstance(image, RemoteFile) and image.url.startswith(f"{media_fakes}/files/{task.id}/")
        assert (image.content_type, image.extension, image.width, image.height) == (
            "image/png",
            "png",
            64,
            48,
        )
        data, _ = await fetch(http, image)
        assert data.startswith(b"\x89PNG\r\n\x1a\n")


async def test_the_requests_fal_gets_have_their_documented_shape(
    http: httpx2.AsyncClient, media_fakes: str
) -> None:
    adapter = fal_image(http, media_fakes)
    request = ImageInput(
        prompt="a kite", size="768x512", output_format="jpeg", image="data:image/png;base64,AAAA"
    )
    task = (await adapter.run(IMAGE_MODEL + "/image-to-image", request)).task
    await adapter.poll(IMAGE_MODEL + "/image-to-image", task)
    create, status = await farm(http, media_fakes, "requests")
    assert create["method"] == "POST" and create["path"] == "/fal/fal-ai/flux/dev/image-to-image"
    assert create["json"] == {
        "prompt": "a kite", "image_size": {"width": 768, "height": 512}, "num_images": 1,
        "output_format": "jpeg", "image_url": "data:image/png;base64,AAAA",
    }  # fmt: skip
    assert status["path"] == f"/fal/fal-ai/flux/requests/{task.id}/status"
    for sent in (create, status):
        assert sent["headers"]["authorization"] == f"Key {API_KEY}"


async def test_a_video_bills_the_requested_seconds_rounded_up(
    http: httpx2.AsyncClient, media_fakes: str
) -> None:
    await render_s(http, media_fakes, 0.3)
    request = VideoInput(prompt="waves at night", duration_s=8, aspect_ratio="1:1")
    task, polls = await drive(fal_video(http, media_fakes), VIDEO_MODEL, request)
    assert task.data["duration_s"] == 10 and polls[-1].state == "succeeded"
    assert polls[-1].usage is not None and polls[-1].usage.units == 10
    [video] = polls[-1].outputs
    assert isinstance(video, RemoteFile) and (video.content_type, video.duration_s) == ("video/mp4", 10)
    data, _ = await fetch(http, video)
    assert data[4:8] == b"ftyp"
    create = (await farm(http, media_fakes, "requests"))[0]
    assert create["json"] == {"prompt": "waves at night", "duration": "10", "aspect_ratio": "1:1"}


async def test_image_to_video_sends_the_frame_and_no_aspect_ratio(
    http: httpx2.AsyncClient, media_fakes: str
) -> None:
    await render_s(http, media_fakes, 0.3)
    request = VideoInput(prompt="the flag waves", duration_s=5, image=IMAGE)
    _, polls = await drive(fal_video(http, media_fakes), I2V_MODEL, request)
    assert polls[-1].state == "succeeded"
    create = (await farm(http, media_fakes, "requests"))[0]
    assert create["json"] == {"prompt": "the flag waves", "duration": "5", "image_url": IMAGE}


@pytest.mark.parametrize(
    ("model", "marker", "raw", "code"),
    [
        (IMAGE_MODEL, "[fail]", "COMPLETED", "provider_unavailable"),
        (IMAGE_MODEL, "[moderate]", "COMPLETED", "provider_content_filtered"),
        (VIDEO_MODEL, "[moderate]", "COMPLETED", "provider_content_filtered"),
        (VIDEO_MODEL, "[expire]", "not_found", "provider_unavailable"),
    ],
)
async def test_a_request_that_does_not_succeed_fails_with_the_right_code(
    http: httpx2.AsyncClient, media_fakes: str, model: str, marker: str, raw: str, code: str
) -> None:
    await render_s(http, media_fakes, 0.3)
    adapter = fal_video(http, media_fakes) if "video" in model else fal_image(http, media_fakes)
    request = (
        VideoInput(prompt=f"a gull {marker}") if "video" in model else ImageInput(prompt=f"a gull {marker}")
    )
    _, polls = await drive(adapter, model, request)
    done = polls[-1]
    assert done.state == "failed" and done.raw_status == raw and not done.outputs
    assert done.error is not None and clean(done.error).code == code


async def test_cancel_stops_a_queued_request_once(http: httpx2.AsyncClient, media_fakes: str) -> None:
    adapter = fal_image(http, media_fakes)
    task = (await adapter.run(IMAGE_MODEL, ImageInput(prompt="a lighthouse"))).task
    assert await adapter.cancel(IMAGE_MODEL, task) is True
    assert (await upstream(http, media_fakes, task))["canceled"] is True
    cancel = (await farm(http, media_fakes, "requests"))[-1]
    assert (cancel["method"], cancel["path"]) == ("PUT", f"/fal/fal-ai/flux/requests/{task.id}/cancel")
    assert await adapter.cancel(IMAGE_MODEL, task) is False  # ALREADY_COMPLETED
    poll = await adapter.poll(IMAGE_MODEL, task)
    assert (poll.state, poll.raw_status) == ("canceled", "COMPLETED")


async def test_a_finished_request_cannot_be_canceled(http: httpx2.AsyncClient, media_fakes: str) -> None:
    await render_s(http, media_fakes, 0.1)
    adapter = fal_image(http, media_fakes)
    task, polls = await drive(adapter, IMAGE_MODEL, ImageInput(prompt="a lighthouse"))
    assert polls[-1].state == "succeeded"
    assert await adapter.cancel(IMAGE_MODEL, task) is False
    assert (await upstream(http, media_fakes, task))["canceled"] is False


async def test_a_rate_limited_submit_carries_retry_after(http: httpx2.AsyncClient, media_fakes: str) -> None:
    await inject(http, media_fakes, provider="fal", step="submit", status=429, retry_after=3)
    with pytest.raises(errors.ProviderRateLimited) as caught:
        await fal_image(http, media_fakes).run(IMAGE_MODEL, ImageInput(prompt="a pier"))
    assert clean(caught.value).retry_after_s == 3


async def test_a_failed_poll_raises_and_the_next_one_works(
    http: httpx2.AsyncClient, media_fakes: str
) -> None:
    adapter = fal_image(http, media_fakes)
    task = (await adapter.run(IMAGE_MODEL, ImageInput(prompt="a pier"))).task
    await inject(http, media_fakes, provider="fal", step="poll", status=500)
    with pytest.raises(errors.ProviderUnavailable) as caught:
        await adapter.poll(IMAGE_MODEL, task)
    assert clean(caught.value).status == 500
    assert (await adapter.poll(IMAGE_MODEL, task)).raw_status in ("IN_QUEUE", "IN_PROGRESS")


async def completed(http: httpx2.AsyncClient, fakes: str, adapter: FalImage, result_url: str) -> Task:
    """A request fal completed, its result URL pointed at ``result_url``."""
    await render_s(http, fakes, 0.1)
    task, _ = await drive(adapter, IMAGE_MODEL, ImageInput(prompt="a pier"))
    return Task(task.id, {**task.data, "response_url": result_url})


async def test_an_untyped_gateway_error_on_the_result_is_retried(
    http: httpx2.AsyncClient, media_fakes: str
) -> None:
    adapter = fal_image(http, media_fakes)
    async with canned_server(b'{"detail": "upstream busy"}', "504 Gateway Timeout") as url:
        task = await completed(http, media_fakes, adapter, f"{url}/result")
        with pytest.raises(errors.ProviderTimeout) as caught:
            await adapter.poll(IMAGE_MODEL, task)
    assert clean(caught.value).status == 504


async def test_a_typed_request_error_on_the_result_is_the_outcome(
    http: httpx2.AsyncClient, media_fakes: str
) -> None:
    adapter = fal_image(http, media_fakes)
    body = b'{"detail": "Request timed out", "error_type": "request_timeout"}'
    async with canned_server(body, "504 Gateway Timeout") as url:
        task = await completed(http, media_fakes, adapter, f"{url}/result")
        poll = await adapter.poll(IMAGE_MODEL, task)
    assert (poll.state, poll.raw_status) == ("failed", "COMPLETED")
    assert poll.error is not None and clean(poll.error).code == "provider_timeout"
    assert "request_timeout: Request timed out" in poll.error.message


async def test_invalid_input_is_rejected_with_fal_s_reason(
    http: httpx2.AsyncClient, media_fakes: str
) -> None:
    with pytest.raises(errors.ProviderRejected) as caught:
        await fal_image(http, media_fakes).run(IMAGE_MODEL, ImageInput(prompt="many", n=5))
    assert clean(caught.value).status == 422 and "between 1 and 4" in caught.value.message


async def test_webp_is_refused_before_sending(http: httpx2.AsyncClient, media_fakes: str) -> None:
    with pytest.raises(errors.ProviderRejected):
        await fal_image(http, media_fakes).run(IMAGE_MODEL, ImageInput(prompt="a", output_format="webp"))
    assert await farm(http, media_fakes, "requests") == []


async def test_no_key_is_an_auth_error(http: httpx2.AsyncClient, media_fakes: str) -> None:
    with pytest.raises(errors.ProviderAuth) as caught:
        await fal_image(http, media_fakes, api_key=None).run(IMAGE_MODEL, ImageInput(prompt="a"))
    assert clean(caught.value).status == 401
