"""BFL FLUX images against their fake (tests/fakes/media/bfl.py): polling URL, statuses, every outcome."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest

from aijobs import errors
from aijobs.providers.bfl import BflImage
from aijobs.providers.tasks import Poll
from aijobs.types.common import RemoteFile
from aijobs.types.image import ImageInput
from tests.providers.tasks_helpers import API_KEY, context, drive, farm, fetch, inject

MODEL = "flux-pro-1.1"
PNG_B64 = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 24).decode()


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient() as client:
        yield client


def bfl(http: httpx2.AsyncClient, fakes: str, **kwargs: Any) -> BflImage:
    return BflImage(context(http, "bfl", fakes + "/bfl", **kwargs))


async def render_s(http: httpx2.AsyncClient, fakes: str, seconds: float) -> None:
    (await http.post(f"{fakes}/_media/config", json={"render_s": seconds})).raise_for_status()


def clean(exc: errors.ProviderError) -> errors.ProviderError:
    """``exc``, after checking our key appears nowhere in it."""
    assert API_KEY not in str(exc) and API_KEY not in exc.body_excerpt
    return exc


def raw_statuses(polls: list[Poll]) -> list[str]:
    """The provider's status words, each run of repeats once."""
    return [p.raw_status for i, p in enumerate(polls) if i == 0 or polls[i - 1].raw_status != p.raw_status]


async def test_an_image_goes_pending_generating_ready_and_downloads(
    http: httpx2.AsyncClient, media_fakes: str
) -> None:
    task, polls = await drive(bfl(http, media_fakes), MODEL, ImageInput(prompt="a walled garden"))
    assert task.data == {
        "polling_url": f"{media_fakes}/bfl/v1/get_result?id={task.id}", "output_format": "png",
    }  # fmt: skip
    assert raw_statuses(polls) == ["Pending", "Generating", "Ready"]
    assert [p.state for p in polls[:1]] == ["queued"] and polls[-1].state == "succeeded"
    running = [p for p in polls if p.state == "running"]
    assert running and all(p.progress is not None and 0 < p.progress <= 1 for p in running)
    done = polls[-1]
    assert done.usage is not None and done.usage.units == 1
    [image] = done.outputs
    assert isinstance(image, RemoteFile) and image.url.startswith(f"{media_fakes}/files/{task.id}/")
    assert (image.content_type, image.extension) == ("image/png", "png")
    data, _ = await fetch(http, image)
    served = await http.get(image.url)
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and served.headers["content-type"] == "image/png"


async def test_the_request_bfl_gets_has_its_documented_shape(
    http: httpx2.AsyncClient, media_fakes: str
) -> None:
    adapter = bfl(http, media_fakes)
    request = ImageInput(
        prompt="make it dusk", size="1024x768", output_format="jpeg", image=f"data:image/png;base64,{PNG_B64}"
    )
    task = (await adapter.run(MODEL, request)).task
    await adapter.poll(MODEL, task)
    create, poll = await farm(http, media_fakes, "requests")
    assert create["method"] == "POST" and create["path"] == f"/bfl/v1/{MODEL}"
    assert create["json"] == {
        "prompt": "make it dusk", "width": 1024, "height": 768, "output_format": "jpeg", "input_image": PNG_B64,
    }  # fmt: skip
    assert create["headers"]["x-key"] == API_KEY and "authorization" not in create["headers"]
    assert (poll["path"], poll["query"]) == ("/bfl/v1/get_result", f"id={task.id}")
    assert poll["headers"]["x-key"] == API_KEY


@pytest.mark.parametrize(
    ("request_", "why"),
    [
        (ImageInput(prompt="two cats", n=2), "one image per task"),
        (ImageInput(prompt="a cat", output_format="webp"), "png or jpeg"),
    ],
)
async def test_what_bfl_cannot_make_is_refused_before_sending(
    http: httpx2.AsyncClient, media_fakes: str, request_: ImageInput, why: str
) -> None:
    with pytest.raises(errors.ProviderRejected) as caught:
        await bfl(http, media_fakes).run(MODEL, request_)
    assert why in clean(caught.value).message
    assert await farm(http, media_fakes, "requests") == []


@pytest.mark.parametrize(
    ("marker", "raw", "code"),
    [
        ("[fail]", "Error", "provider_unavailable"),
        ("[moderate]", "Content Moderated", "provider_content_filtered"),
        ("[expire]", "Task not found", "provider_unavailable"),
    ],
)
async def test_a_task_that_does_not_succeed_fails_with_the_right_code(
    http: httpx2.AsyncClient, media_fakes: str, marker: str, raw: str, code: str
) -> None:
    await render_s(http, media_fakes, 0.3)
    _, polls = await drive(bfl(http, media_fakes), MODEL, ImageInput(prompt=f"an owl {marker}"))
    done = polls[-1]
    assert done.state == "failed" and done.raw_status == raw and not done.outputs
    assert done.error is not None and clean(done.error).code == code


async def test_a_rate_limited_submit_carries_retry_after(http: httpx2.AsyncClient, media_fakes: str) -> None:
    await inject(http, media_fakes, provider="bfl", step="submit", status=429, retry_after=12)
    with pytest.raises(errors.ProviderRateLimited) as caught:
        await bfl(http, media_fakes).run(MODEL, ImageInput(prompt="a bridge"))
    assert clean(caught.value).retry_after_s == 12


async def test_a_failed_poll_raises_and_the_next_one_works(
    http: httpx2.AsyncClient, media_fakes: str
) -> None:
    adapter = bfl(http, media_fakes)
    task = (await adapter.run(MODEL, ImageInput(prompt="a bridge"))).task
    await inject(http, media_fakes, provider="bfl", step="poll", status=500)
    with pytest.raises(errors.ProviderUnavailable) as caught:
        await adapter.poll(MODEL, task)
    assert clean(caught.value).status == 500
    assert (await adapter.poll(MODEL, task)).raw_status in ("Pending", "Generating")


async def test_a_size_bfl_does_not_take_is_rejected(http: httpx2.AsyncClient, media_fakes: str) -> None:
    with pytest.raises(errors.ProviderRejected) as caught:
        await bfl(http, media_fakes).run(MODEL, ImageInput(prompt="a bridge", size="1000x1000"))
    assert clean(caught.value).status == 422


async def test_no_key_is_an_auth_error(http: httpx2.AsyncClient, media_fakes: str) -> None:
    with pytest.raises(errors.ProviderAuth) as caught:
        await bfl(http, media_fakes, api_key=None).run(MODEL, ImageInput(prompt="a bridge"))
    assert clean(caught.value).status == 403


async def test_bfl_has_no_cancel(http: httpx2.AsyncClient, media_fakes: str) -> None:
    adapter = bfl(http, media_fakes)
    task = (await adapter.run(MODEL, ImageInput(prompt="a lantern"))).task
    assert await adapter.cancel(MODEL, task) is False
    [upstream] = await farm(http, media_fakes)
    assert upstream["canceled"] is False
