"""Kling video against its fake (tests/fakes/media/kling.py): JWT auth, both create paths, every outcome."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import orjson
import pytest

from aijobs import errors
from aijobs.providers.kling import KlingOptions, KlingVideo
from aijobs.providers.tasks import Poll
from aijobs.types.common import RemoteFile
from aijobs.types.video import VideoInput
from tests.providers.canned import canned_server
from tests.providers.tasks_helpers import context, drive, farm, fetch, inject

MODEL = "kling-v2-1"
KEY = "test-access|test-secret"
PNG_B64 = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 24).decode()


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient() as client:
        yield client


def kling(http: httpx2.AsyncClient, base_url: str, api_key: str | None = KEY, **kwargs: Any) -> KlingVideo:
    return KlingVideo(context(http, "kling", base_url, api_key=api_key, **kwargs))


async def render_s(http: httpx2.AsyncClient, fakes: str, seconds: float) -> None:
    (await http.post(f"{fakes}/_media/config", json={"render_s": seconds})).raise_for_status()


def clean(exc: errors.ProviderError) -> errors.ProviderError:
    """``exc``, after checking neither the key nor its secret half appears in it."""
    for secret in (KEY, "test-secret", "wrong-secret"):
        assert secret not in str(exc) and secret not in exc.body_excerpt
    return exc


def raw_statuses(polls: list[Poll]) -> list[str]:
    """The provider's status words, each run of repeats once."""
    return [p.raw_status for i, p in enumerate(polls) if i == 0 or polls[i - 1].raw_status != p.raw_status]


async def test_text_to_video_goes_queued_running_succeeded_and_bills_the_reported_seconds(
    http: httpx2.AsyncClient, media_fakes: str
) -> None:
    request = VideoInput(prompt="a red kite over the dunes", duration_s=5)
    task, polls = await drive(kling(http, media_fakes + "/kling"), MODEL, request)
    assert task.data == {"path": "text2video", "duration_s": 5}
    assert raw_statuses(polls) == ["submitted", "processing", "succeed"]
    assert [p.state for p in polls[:1]] == ["queued"] and "running" in {p.state for p in polls}
    done = polls[-1]
    assert done.state == "succeeded" and done.usage is not None and done.usage.units == pytest.approx(5.1)
    [video] = done.outputs
    assert isinstance(video, RemoteFile) and video.duration_s == pytest.approx(5.1)
    assert video.url.startswith(f"{media_fakes}/files/")  # the server root, not under /kling
    data, content_type = await fetch(http, video)
    assert content_type == "video/mp4" and data[4:8] == b"ftyp" and len(data) == 65_536


async def test_the_request_kling_gets_has_its_documented_shape_and_a_verifiable_jwt(
    http: httpx2.AsyncClient, media_fakes: str
) -> None:
    options = {MODEL: KlingOptions(mode="pro")}
    adapter = kling(http, media_fakes + "/kling", model_options=options)
    request = VideoInput(prompt="a tram in the rain", duration_s=7, aspect_ratio="9:16")
    task = (await adapter.run(MODEL, request)).task
    await adapter.poll(MODEL, task)
    create, query = await farm(http, media_fakes, "requests")
    assert create["path"] == "/kling/v1/videos/text2video"
    assert create["json"] == {
        "model_name": MODEL, "prompt": "a tram in the rain", "duration": "10", "mode": "pro", "aspect_ratio": "9:16",
    }  # fmt: skip
    assert query["method"] == "GET" and query["path"] == f"/kling/v1/videos/text2video/{task.id}"
    for sent in (create, query):
        scheme, token = sent["headers"]["authorization"].split(" ")
        head, claims, signature = token.split(".")
        expected = hmac.new(b"test-secret", f"{head}.{claims}".encode(), hashlib.sha256).digest()
        assert (
            scheme == "Bearer"
            and base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)) == expected
        )
        assert orjson.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4))) == {
            "alg": "HS256",
            "typ": "JWT",
        }
        payload = orjson.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
        assert payload["iss"] == "test-access" and payload["exp"] - payload["nbf"] == 1805
        assert payload["nbf"] <= time.time() < payload["exp"]
        assert "test-secret" not in token


async def test_image_to_video_sends_bare_base64_and_polls_the_image2video_path(
    http: httpx2.AsyncClient, media_fakes: str
) -> None:
    await render_s(http, media_fakes, 0.3)
    request = VideoInput(prompt="the cat wakes up", duration_s=10, image=f"data:image/png;base64,{PNG_B64}")
    task, polls = await drive(kling(http, media_fakes + "/kling"), MODEL, request)
    assert task.data == {"path": "image2video", "duration_s": 10} and polls[-1].state == "succeeded"
    create, *queries = await farm(http, media_fakes, "requests")
    assert create["path"] == "/kling/v1/videos/image2video"
    assert create["json"]["image"] == PNG_B64 and "aspect_ratio" not in create["json"]
    assert {q["path"] for q in queries} == {f"/kling/v1/videos/image2video/{task.id}"}
    assert polls[-1].usage is not None and polls[-1].usage.units == pytest.approx(10.1)


@pytest.mark.parametrize(
    ("marker", "raw", "code"),
    [
        ("[fail]", "failed", "provider_unavailable"),
        ("[moderate]", "failed", "provider_content_filtered"),
        ("[expire]", "not_found", "provider_unavailable"),
    ],
)
async def test_a_task_that_does_not_succeed_fails_with_the_right_code(
    http: httpx2.AsyncClient, media_fakes: str, marker: str, raw: str, code: str
) -> None:
    await render_s(http, media_fakes, 0.3)
    _, polls = await drive(kling(http, media_fakes + "/kling"), MODEL, VideoInput(prompt=f"a fox {marker}"))
    done = polls[-1]
    assert done.state == "failed" and done.raw_status == raw and not done.outputs
    assert done.error is not None and clean(done.error).code == code


async def test_a_rate_limited_submit_carries_retry_after(http: httpx2.AsyncClient, media_fakes: str) -> None:
    await inject(http, media_fakes, provider="kling", step="submit", status=429, retry_after=7)
    with pytest.raises(errors.ProviderRateLimited) as caught:
        await kling(http, media_fakes + "/kling").run(MODEL, VideoInput(prompt="a boat"))
    assert clean(caught.value).retry_after_s == 7 and "1302" in caught.value.message


async def test_an_exhausted_resource_pack_is_billing_although_kling_answers_429(
    http: httpx2.AsyncClient, media_fakes: str
) -> None:
    await inject(
        http, media_fakes, provider="kling", step="submit", status=402
    )  # the fake answers 429 + 1102
    with pytest.raises(errors.ProviderAuth) as caught:
        await kling(http, media_fakes + "/kling").run(MODEL, VideoInput(prompt="a boat"))
    assert clean(caught.value).status == 402 and "1102" in caught.value.message


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (1102, errors.ProviderAuth),
        (1303, errors.ProviderRateLimited),
        (1301, errors.ProviderContentFiltered),
        (1004, errors.ProviderAuth),
        (1201, errors.ProviderRejected),
        (5001, errors.ProviderUnavailable),
    ],
)
async def test_an_error_code_in_a_200_envelope_is_raised_by_what_it_means(
    http: httpx2.AsyncClient, code: int, error: type[errors.ProviderError]
) -> None:
    body = orjson.dumps({"code": code, "message": "Trigger the platform's rules", "request_id": "r1"})
    async with canned_server(body) as url:
        with pytest.raises(error) as caught:
            await kling(http, url).run(MODEL, VideoInput(prompt="a boat"))
    assert type(clean(caught.value)) is error and str(code) in caught.value.message


async def test_a_failed_poll_raises_and_the_next_one_works(
    http: httpx2.AsyncClient, media_fakes: str
) -> None:
    adapter = kling(http, media_fakes + "/kling")
    task = (await adapter.run(MODEL, VideoInput(prompt="a heron"))).task
    await inject(http, media_fakes, provider="kling", step="poll", status=500)
    with pytest.raises(errors.ProviderUnavailable) as caught:
        await adapter.poll(MODEL, task)
    assert clean(caught.value).status == 500
    assert (await adapter.poll(MODEL, task)).state in ("queued", "running")


async def test_keys_that_do_not_authenticate_are_auth_errors_without_the_key(
    http: httpx2.AsyncClient, media_fakes: str
) -> None:
    with pytest.raises(errors.ProviderAuth) as unsplit:
        await kling(http, media_fakes + "/kling", api_key="wrong-secret").run(MODEL, VideoInput(prompt="a"))
    assert "ACCESS_KEY|SECRET_KEY" in clean(unsplit.value).message
    assert await farm(http, media_fakes, "requests") == []  # refused before anything was sent
    with pytest.raises(errors.ProviderAuth) as unsigned:
        await kling(http, media_fakes + "/kling", api_key="test-access|wrong-secret").run(
            MODEL, VideoInput(prompt="a")
        )
    assert clean(unsigned.value).status == 401 and "1000" in unsigned.value.message


async def test_kling_has_no_cancel(http: httpx2.AsyncClient, media_fakes: str) -> None:
    adapter = kling(http, media_fakes + "/kling")
    task = (await adapter.run(MODEL, VideoInput(prompt="a lantern"))).task
    assert await adapter.cancel(MODEL, task) is False
    [upstream] = await farm(http, media_fakes)
    assert upstream["canceled"] is False


async def test_a_named_submit_sends_external_task_id_and_find_adopts_that_task(
    http: httpx2.AsyncClient, media_fakes: str
) -> None:
    adapter = kling(http, media_fakes + "/kling")
    request = VideoInput(prompt="a tram in the rain", duration_s=7)
    task = (await adapter.run(MODEL, request, "job_0001")).task
    (create,) = await farm(http, media_fakes, "requests")
    assert create["json"]["external_task_id"] == "job_0001"
    found = await adapter.find(MODEL, request, "job_0001")
    assert found == task  # the same id, and what polling needs (path, length) rebuilt from the request
    lookup = (await farm(http, media_fakes, "requests"))[-1]
    assert lookup["method"] == "GET" and lookup["path"] == "/kling/v1/videos/text2video/job_0001"
    assert (await adapter.poll(MODEL, found)).state in ("queued", "running")
    assert await adapter.find(MODEL, request, "job_0002") is None  # never submitted: Kling has none
    assert len(await farm(http, media_fakes)) == 1


async def test_find_looks_where_the_request_was_created(http: httpx2.AsyncClient, media_fakes: str) -> None:
    adapter = kling(http, media_fakes + "/kling")
    request = VideoInput(prompt="the cat wakes up", image=f"data:image/png;base64,{PNG_B64}", duration_s=10)
    task = (await adapter.run(MODEL, request, "job_i2v")).task
    assert await adapter.find(MODEL, request, "job_i2v") == task
    assert task.data == {"path": "image2video", "duration_s": 10}
    text_only = VideoInput(prompt="the cat wakes up", duration_s=10)
    assert await adapter.find(MODEL, text_only, "job_i2v") is None  # Kling's query path must match


async def test_kling_refuses_a_second_task_under_the_same_name(
    http: httpx2.AsyncClient, media_fakes: str
) -> None:
    adapter = kling(http, media_fakes + "/kling")
    await adapter.run(MODEL, VideoInput(prompt="a heron"), "job_twice")
    with pytest.raises(errors.ProviderRejected) as caught:
        await adapter.run(MODEL, VideoInput(prompt="a heron"), "job_twice")
    assert "external_task_id" in clean(caught.value).message
    assert len(await farm(http, media_fakes)) == 1


async def test_a_failed_lookup_raises_rather_than_saying_there_is_no_task(
    http: httpx2.AsyncClient, media_fakes: str
) -> None:
    adapter = kling(http, media_fakes + "/kling")
    await inject(http, media_fakes, provider="kling", step="poll", status=503)
    with pytest.raises(errors.ProviderUnavailable):
        await adapter.find(MODEL, VideoInput(prompt="a heron"), "job_unknown")


async def test_a_lost_create_answer_is_unknown_and_the_task_is_findable(
    http: httpx2.AsyncClient, media_fakes: str
) -> None:
    """The create went through but its answer is unreadable: the submit is an unknown outcome, and the
    task it made is the one a lookup by name finds."""
    adapter = kling(http, media_fakes + "/kling")
    await inject(http, media_fakes, provider="kling", step="submit", body='{"code": 0, "data": ')
    request = VideoInput(prompt="a kite")
    with pytest.raises(errors.SubmitUnknown):
        await adapter.run(MODEL, request, "job_lost")
    [upstream] = await farm(http, media_fakes)
    found = await adapter.find(MODEL, request, "job_lost")
    assert found is not None and found.id == upstream["id"]
