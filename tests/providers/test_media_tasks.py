"""Every task adapter against its fake: the rules no adapter may break, whoever wrote it.

- Never pay twice: a submit answered 2xx with a body the adapter cannot read (not JSON, no task id)
  may have created the task, so it is a SubmitUnknown (never retried, never sent elsewhere), and the
  provider saw exactly one create.
- A request no HTTP client can send (a ~70,000-character URL, a bad port, a scheme other than http)
  is a clean provider error, never an exception that escapes as ``gateway_internal``, and a submit
  that never left is not an unknown outcome.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest

from aijobs import errors
from aijobs.providers import ark, bfl, fal, http, kling, minimax, veo, wan
from aijobs.providers.base import Task
from aijobs.providers.registry import ADAPTERS
from aijobs.providers.tasks import TaskAdapter, naming
from aijobs.providers.transport import upstream_client
from aijobs.types.image import ImageInput
from aijobs.types.video import VideoInput
from tests.providers.tasks_helpers import API_KEY, context, farm, inject

LONG_PATH = "/" + "x" * 70_000  # past every URL limit (httpx2 refuses URLs over 65,536 characters)


@dataclass(frozen=True)
class Case:
    """One task adapter, built on its fake: the fake's name in the farm, a model and a valid request."""

    kind: str
    adapter: Callable[[httpx2.AsyncClient, str], TaskAdapter]
    provider: str  # the fake's (and its faults') name in the farm
    model: str
    request: Any


def built(cls: type[TaskAdapter], kind: str, prefix: str, key: str = API_KEY) -> Callable[..., TaskAdapter]:
    return lambda client, fakes: cls(context(client, kind, f"{fakes}/{prefix}", api_key=key))


VIDEO = VideoInput(prompt="a kite over the dunes", duration_s=5)
IMAGE = ImageInput(prompt="a red kite", size="512x512")
CASES = {
    ("kling", "video"): Case(
        "kling",
        built(kling.KlingVideo, "kling", "kling", "test-access|test-secret"),
        "kling",
        "kling-v2-1",
        VIDEO,
    ),
    ("ark", "video"): Case(
        "ark", built(ark.SeedanceVideo, "ark", "ark"), "ark", "doubao-seedance-1-0-pro-250528", VIDEO
    ),
    ("gemini", "video"): Case(
        "gemini", built(veo.VeoVideo, "gemini", "veo"), "veo", "veo-3.0-fast-generate-001", VIDEO
    ),
    ("minimax", "video"): Case(
        "minimax", built(minimax.MiniMaxVideo, "minimax", "minimax"), "minimax", "MiniMax-Hailuo-02", VIDEO
    ),
    ("dashscope", "video"): Case(
        "dashscope", built(wan.WanVideo, "dashscope", "dashscope"), "dashscope", "wan2.5-t2v-preview", VIDEO
    ),
    ("dashscope", "image"): Case(
        "dashscope", built(wan.WanImage, "dashscope", "dashscope"), "dashscope", "wan2.2-t2i-flash", IMAGE
    ),
    ("bfl", "image"): Case("bfl", built(bfl.BflImage, "bfl", "bfl"), "bfl", "flux-pro-1.1", IMAGE),
    ("fal", "image"): Case("fal", built(fal.FalImage, "fal", "fal"), "fal", "fal-ai/flux/dev", IMAGE),
    ("fal", "video"): Case(
        "fal",
        built(fal.FalVideo, "fal", "fal"),
        "fal",
        "fal-ai/kling-video/v2.1/standard/text-to-video",
        VIDEO,
    ),
}
#: 2xx bodies no adapter can read a task out of: not JSON at all, JSON without an id, JSON null.
UNREADABLE = ["<html><body>upstream hiccup</body></html>", "{}", "null"]


@pytest.fixture
async def client() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient() as http_client:
        yield http_client


def test_every_task_adapter_is_covered_here() -> None:
    tasks = {key for key, cls in ADAPTERS.items() if isinstance(cls, type) and issubclass(cls, TaskAdapter)}
    assert tasks == set(CASES)


@pytest.mark.parametrize("key", list(CASES), ids=[f"{k}-{t}" for k, t in CASES])
async def test_the_fakes_take_every_case_as_a_valid_submit(
    client: httpx2.AsyncClient, media_fakes: str, key: tuple[str, str]
) -> None:
    case = CASES[key]
    submitted = await case.adapter(client, media_fakes).run(case.model, case.request)
    assert [t["id"] for t in await farm(client, media_fakes) if t["provider"] == case.provider]
    assert submitted.task.id


@pytest.mark.parametrize("body", UNREADABLE, ids=["html", "empty-object", "null"])
@pytest.mark.parametrize("key", list(CASES), ids=[f"{k}-{t}" for k, t in CASES])
async def test_a_2xx_submit_answer_that_cannot_be_read_is_an_unknown_outcome(
    client: httpx2.AsyncClient, media_fakes: str, key: tuple[str, str], body: str
) -> None:
    case = CASES[key]
    await inject(client, media_fakes, provider=case.provider, step="submit", body=body)
    with pytest.raises(errors.SubmitUnknown) as caught:
        await case.adapter(client, media_fakes).run(case.model, case.request)
    error = caught.value
    assert error.outcome_unknown and not isinstance(error, errors.ProviderBadResponse)
    assert error.status == 200 and "may exist upstream" in error.message
    assert error.provider == case.kind and error.model == case.model
    created = [t for t in await farm(client, media_fakes) if t["provider"] == case.provider]
    assert len(created) == 1  # the provider did make the task: the reason it must not be made again


async def test_an_error_status_with_an_unreadable_body_is_still_a_plain_failure(
    client: httpx2.AsyncClient, media_fakes: str
) -> None:
    case = CASES[("gemini", "video")]
    await inject(client, media_fakes, provider="veo", step="submit", status=503)
    with pytest.raises(errors.ProviderUnavailable) as caught:
        await case.adapter(client, media_fakes).run(case.model, case.request)
    assert not caught.value.outcome_unknown and caught.value.retry  # nothing was created: retrying is safe
    assert await farm(client, media_fakes) == []


async def test_naming_reaches_the_submit_of_adapters_that_name_tasks(
    client: httpx2.AsyncClient, media_fakes: str
) -> None:
    case = CASES[("kling", "video")]
    with naming("job_0123456789abcdef"):
        submitted = await case.adapter(client, media_fakes).run(case.model, case.request)
    (create,) = await farm(client, media_fakes, "requests")
    assert create["json"]["external_task_id"] == "job_0123456789abcdef"
    other = CASES[("ark", "video")]
    with naming("job_0123456789abcdef"):  # Ark has no way to name a task: nothing extra is sent
        await other.adapter(client, media_fakes).run(other.model, other.request)
    assert "job_0123456789abcdef" not in str((await farm(client, media_fakes, "requests"))[-1]["json"])
    assert submitted.task.id


@pytest.mark.parametrize("key", list(CASES), ids=[f"{k}-{t}" for k, t in CASES])
async def test_polling_a_task_whose_url_cannot_be_sent_is_a_clean_error(
    client: httpx2.AsyncClient, media_fakes: str, key: tuple[str, str]
) -> None:
    """A task id (or polling URL) from an answer can be anything: ~70,000 characters of it end in a
    ProviderRejected, not in httpx2's InvalidURL escaping the adapter."""
    case = CASES[key]
    adapter = case.adapter(client, media_fakes)
    long_url = f"{media_fakes}/{case.provider}{LONG_PATH}"
    data = {
        "name": f"models/{case.model}/operations/{'x' * 70_000}", "path": "text2video", "duration_s": 5,
        "polling_url": long_url, "status_url": long_url, "response_url": long_url, "cancel_url": long_url,
        "kind": "video", "width": 1280, "height": 720,
    }  # fmt: skip
    with pytest.raises(errors.ProviderRejected) as caught:
        await adapter.poll(case.model, Task("x" * 70_000, data))
    assert "could not be sent" in caught.value.message and "x" * 300 not in caught.value.message
    assert await farm(client, media_fakes, "requests") == []  # nothing went out


@pytest.mark.parametrize(
    ("url", "why"),
    [
        (LONG_PATH, "invalid URL: URL too long"),
        ("http://127.0.0.1:99999/v1/x", "port 99999 is out of range"),
        ("ftp://127.0.0.1/v1/x", "scheme 'ftp'"),
        ("http:///v1/x", "names no host"),
        ("/v1/a\x7fb", "non-printable"),
    ],
)
async def test_a_submit_that_cannot_be_sent_is_rejected_not_an_unknown_outcome(
    media_fakes: str, url: str, why: str
) -> None:
    """Through the production client (aiohttp's pool), which would send a 70,000-character URL
    as it is: every client refuses the same URLs the same way, before anything is sent."""
    upstream = upstream_client()
    try:
        adapter = CASES[("bfl", "image")].adapter(upstream, media_fakes)
        target = media_fakes + "/bfl" + url if url.startswith("/") else url
        with pytest.raises(errors.ProviderRejected) as caught:
            await http.request_json(
                adapter.context, "POST", target, {"prompt": "p"}, model="flux-pro-1.1", headers={},
                timeouts=adapter.timeouts, submit=True,
            )  # fmt: skip
        assert why in caught.value.message and not caught.value.outcome_unknown
        assert not caught.value.retry and not caught.value.fallback  # the same request fails the same way
    finally:
        await upstream.aclose()
    async with httpx2.AsyncClient() as probe:
        assert await farm(probe, media_fakes, "requests") == []
