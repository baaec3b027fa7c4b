"""Doubao Seedance on Volcengine Ark against its fake (tests/fakes/media/ark.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import orjson
import pytest

from aijobs import errors
from aijobs.prices import PriceBook, bundled_prices
from aijobs.providers.ark import SeedanceVideo
from aijobs.providers.base import ProviderContext, Task
from aijobs.routing.config import ProviderConfig
from aijobs.types.common import RemoteFile
from aijobs.types.video import VideoInput
from tests.providers.canned import canned_server
from tests.providers.tasks_helpers import API_KEY, context, drive, farm, fetch, inject

MODEL = "doubao-seedance-1-0-pro-250528"
IMAGE = "data:image/png;base64,iVBORw0KGgo="


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient() as client:
        yield client


async def render_s(http: httpx2.AsyncClient, fakes: str, seconds: float) -> None:
    (await http.post(f"{fakes}/_media/config", json={"render_s": seconds})).raise_for_status()


def seedance(http: httpx2.AsyncClient, fakes: str, **kwargs: Any) -> SeedanceVideo:
    return SeedanceVideo(context(http, "ark", fakes + "/ark", **kwargs))


def clean(exc: errors.ProviderError) -> errors.ProviderError:
    """``exc``, after checking our key appears nowhere in it."""
    assert API_KEY not in str(exc) and API_KEY not in exc.body_excerpt
    return exc


async def upstream(http: httpx2.AsyncClient, fakes: str, task: Task) -> dict[str, Any]:
    """The farm's view of ``task`` (Ark's ids are the farm's with a ``cgt-`` prefix)."""
    found: list[dict[str, Any]] = [t for t in await farm(http, fakes) if "cgt-" + t["id"] == task.id]
    assert len(found) == 1
    return found[0]


@pytest.mark.parametrize("image", [None, IMAGE])
async def test_success_carries_the_video_and_the_tokens_ark_bills(
    http: httpx2.AsyncClient, media_fakes: str, image: str | None
) -> None:
    await render_s(http, media_fakes, 0.3)
    request = VideoInput(prompt="a lighthouse at dusk", duration_s=5, aspect_ratio="9:16", image=image)
    task, polls = await drive(seedance(http, media_fakes), MODEL, request)
    assert task.id.startswith("cgt-")
    assert [p.state for p in polls if p.state != "succeeded"] == [p.raw_status for p in polls[:-1]]
    assert polls[0].state == "queued" and polls[-1].raw_status == "succeeded"
    done = polls[-1]
    (output,) = done.outputs
    assert isinstance(output, RemoteFile)
    assert (output.content_type, output.extension, output.duration_s) == ("video/mp4", "mp4", 5.0)
    assert output.width is None and output.height is None
    assert done.usage is not None
    # Ark's count for 720p 9:16: 704 x 1248 px x 24 fps x 5 s / 1024.
    assert (done.usage.output_tokens, done.usage.units) == (704 * 1248 * 24 * 5 // 1024, 5.0)
    data, _ = await fetch(http, output)
    assert data[4:8] == b"ftyp"
    sent = (await farm(http, media_fakes, "requests"))[0]
    assert (sent["method"], sent["path"]) == ("POST", "/ark/api/v3/contents/generations/tasks")
    assert sent["headers"]["authorization"] == f"Bearer {API_KEY}"
    content: list[dict[str, Any]] = [{"type": "text", "text": "a lighthouse at dusk"}]
    if image:
        content.append({"type": "image_url", "image_url": {"url": image}, "role": "first_frame"})
    assert sent["json"] == {
        "model": MODEL, "content": content, "duration": 5, "ratio": "9:16", "resolution": "720p",
    }  # fmt: skip


async def test_cancel_of_a_queued_task(http: httpx2.AsyncClient, media_fakes: str) -> None:
    await render_s(http, media_fakes, 3.0)
    adapter = seedance(http, media_fakes)
    submitted = await adapter.run(MODEL, VideoInput(prompt="a kite"))
    assert await adapter.cancel(MODEL, submitted.task) is True
    assert (await upstream(http, media_fakes, submitted.task))["canceled"] is True
    poll = await adapter.poll(MODEL, submitted.task)
    assert (poll.state, poll.raw_status) == ("canceled", "cancelled")
    delete = (await farm(http, media_fakes, "requests"))[1]
    assert (delete["method"], delete["path"]) == (
        "DELETE",
        f"/ark/api/v3/contents/generations/tasks/{submitted.task.id}",
    )


async def test_cancel_of_a_running_task_is_refused(http: httpx2.AsyncClient, media_fakes: str) -> None:
    await render_s(http, media_fakes, 1.5)
    adapter = seedance(http, media_fakes)
    submitted = await adapter.run(MODEL, VideoInput(prompt="a kite"))
    for _ in range(100):
        if (await adapter.poll(MODEL, submitted.task)).state == "running":
            break
        await asyncio.sleep(0.05)
    assert await adapter.cancel(MODEL, submitted.task) is False
    assert (await upstream(http, media_fakes, submitted.task))["canceled"] is False


async def test_cancel_that_fails_upstream_raises(http: httpx2.AsyncClient, media_fakes: str) -> None:
    adapter = seedance(http, media_fakes)
    submitted = await adapter.run(MODEL, VideoInput(prompt="a kite"))
    await inject(http, media_fakes, provider="ark", step="cancel", status=500)
    with pytest.raises(errors.ProviderUnavailable) as caught:
        await adapter.cancel(MODEL, submitted.task)
    clean(caught.value)


@pytest.mark.parametrize(
    ("marker", "raw", "cls", "code"),
    [
        ("[fail]", "failed", errors.ProviderUnavailable, "InternalServiceError"),
        ("[moderate]", "failed", errors.ProviderContentFiltered, "OutputVideoSensitiveContentDetected"),
        ("[expire]", "not_found", errors.ProviderUnavailable, "no longer exists"),
    ],
)
async def test_failures_end_the_task_with_the_right_error(
    http: httpx2.AsyncClient,
    media_fakes: str,
    marker: str,
    raw: str,
    cls: type[errors.ProviderError],
    code: str,
) -> None:
    await render_s(http, media_fakes, 0.3)
    _, polls = await drive(seedance(http, media_fakes), MODEL, VideoInput(prompt=f"a storm {marker}"))
    last = polls[-1]
    assert (last.state, last.raw_status, last.outputs, last.usage) == ("failed", raw, [], None)
    assert type(last.error) is cls and code in last.error.message
    clean(last.error)


@pytest.mark.parametrize(("status", "retry_after_s"), [(500, None), (503, 2), (429, 2)])
async def test_poll_fault_raises_and_the_next_poll_works(
    http: httpx2.AsyncClient, media_fakes: str, status: int, retry_after_s: float | None
) -> None:
    adapter = seedance(http, media_fakes)
    submitted = await adapter.run(MODEL, VideoInput(prompt="a boat"))
    await inject(http, media_fakes, provider="ark", step="poll", status=status, retry_after=2)
    with pytest.raises(errors.ProviderError) as caught:
        await adapter.poll(MODEL, submitted.task)
    assert (
        caught.value.retry and caught.value.status == status and caught.value.retry_after_s == retry_after_s
    )
    clean(caught.value)
    assert (await adapter.poll(MODEL, submitted.task)).state == "queued"


async def test_poll_404_means_gone(http: httpx2.AsyncClient, media_fakes: str) -> None:
    poll = await seedance(http, media_fakes).poll(MODEL, Task("cgt-20250101000000-nope", {}))
    assert (poll.state, poll.raw_status) == ("failed", "not_found")
    assert isinstance(poll.error, errors.ProviderUnavailable)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, errors.ProviderRejected),
        (401, errors.ProviderAuth),
        (403, errors.ProviderAuth),
        (404, errors.ProviderModelNotFound),
        (429, errors.ProviderRateLimited),
        (500, errors.ProviderUnavailable),
    ],
)
async def test_submit_errors_map_from_arks_error_body(
    http: httpx2.AsyncClient, media_fakes: str, status: int, cls: type[errors.ProviderError]
) -> None:
    await inject(http, media_fakes, provider="ark", step="submit", status=status, retry_after=7)
    with pytest.raises(cls) as caught:
        await seedance(http, media_fakes).run(MODEL, VideoInput(prompt="a boat"))
    assert type(caught.value) is cls and caught.value.status == status
    if cls is errors.ProviderRateLimited:
        assert caught.value.retry_after_s == 7
    clean(caught.value)
    assert await farm(http, media_fakes) == []


async def test_ark_refuses_a_duration_it_cannot_render(http: httpx2.AsyncClient, media_fakes: str) -> None:
    with pytest.raises(errors.ProviderRejected) as caught:
        await seedance(http, media_fakes).run(MODEL, VideoInput(prompt="a boat", duration_s=20))
    assert "InvalidParameter" in clean(caught.value).message


async def test_a_model_ark_does_not_have_is_model_not_found(
    http: httpx2.AsyncClient, media_fakes: str
) -> None:
    with pytest.raises(errors.ProviderModelNotFound, match=r"InvalidEndpointOrModel\.NotFound"):
        await seedance(http, media_fakes).run("doubao-pro-32k", VideoInput(prompt="a boat"))


async def test_without_a_key_is_an_auth_error(http: httpx2.AsyncClient, media_fakes: str) -> None:
    with pytest.raises(errors.ProviderAuth, match="AuthenticationError"):
        await seedance(http, media_fakes, api_key=None).run(MODEL, VideoInput(prompt="a boat"))


async def test_an_unanswered_submit_is_submit_unknown(http: httpx2.AsyncClient, media_fakes: str) -> None:
    config = ProviderConfig(kind="ark", base_url=media_fakes + "/ark", read_timeout_s=0.2)
    adapter = SeedanceVideo(ProviderContext("ark", config, API_KEY, http, {}))
    await inject(http, media_fakes, provider="ark", step="submit", delay_s=0.6)
    with pytest.raises(errors.SubmitUnknown):
        await adapter.run(MODEL, VideoInput(prompt="a boat"))
    for _ in range(100):  # the task exists upstream all the same
        if await farm(http, media_fakes):
            break
        await asyncio.sleep(0.05)
    assert len(await farm(http, media_fakes)) == 1


async def test_seedance_is_priced_by_its_tokens_so_resolution_changes_the_cost(
    http: httpx2.AsyncClient, media_fakes: str
) -> None:
    """Ark counts pixels x frames (width x height x 24 fps x seconds / 1024); the bundled price is 15 CNY
    per million of those tokens, so the same 5 s clip costs more at 1080p than at 720p or 480p."""
    await render_s(http, media_fakes, 0.2)
    book = PriceBook({}, *bundled_prices())
    costs: dict[str, float] = {}
    for resolution, (width, height) in {
        "480p": (864, 480),
        "720p": (1248, 704),
        "1080p": (1920, 1088),
    }.items():
        request = VideoInput(prompt="a lighthouse at dusk", duration_s=5, resolution=resolution)
        _, polls = await drive(seedance(http, media_fakes), MODEL, request)
        usage = polls[-1].usage
        assert usage is not None and usage.output_tokens == width * height * 24 * 5 // 1024
        cost = book.cost_usd("ark", MODEL, "video", usage)
        assert cost is not None and cost == pytest.approx(usage.output_tokens * 15 / 1_000_000 * 0.14)
        costs[resolution] = cost
    assert costs["480p"] < costs["720p"] < costs["1080p"]
    assert costs["1080p"] == pytest.approx(3.672 * 0.14)  # 244,800 tokens, as the price table says


async def test_usage_falls_back_to_total_tokens(http: httpx2.AsyncClient) -> None:
    record = {
        "id": "cgt-1", "status": "succeeded", "duration": 5, "content": {"video_url": "https://x.test/v.mp4"},
        "usage": {"total_tokens": 1234},
    }  # fmt: skip
    async with canned_server(orjson.dumps(record)) as url:
        poll = await SeedanceVideo(context(http, "ark", url)).poll(MODEL, Task("cgt-1", {}))
    assert poll.usage is not None and poll.usage.output_tokens == 1234
