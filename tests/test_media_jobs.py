"""Media jobs end to end: API and worker processes, provider fakes over HTTP, outputs in moto's S3.

Long-running tasks go submit → queued → running → succeeded through separate poll jobs; outputs are
copied into S3 and served by our signed URLs; a task id means no fallback; cancel reaches upstream.
Never paying twice: a submit answered 2xx unreadably is never repeated; a worker killed mid-submit
leaves a job whose next run adopts the task it made (Kling names tasks after their job), submits again
when none was made, and fails when the provider cannot be asked.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from aijobs.providers import sim_media
from tests.conftest import ROOT, TEST_ROUTING, Service, own_db, run_service
from tests.providers.tasks_helpers import farm, inject

MEDIA_PROVIDERS = """
[providers.kling]
kind = "kling"
base_url = "{fakes}/kling"
api_key_env = "KLING_API_KEY"
[providers.kling.tasks]
poll_interval_s = {first_poll_s}
poll_interval_cap_s = 0.5
task_timeout_s = 6

[providers.fal]
kind = "fal"
base_url = "{fakes}/fal"
api_key_env = "FAL_KEY"
[providers.fal.tasks]
poll_interval_s = 0.2
poll_interval_cap_s = 0.5

[providers.kling.prices.kling-v2-1]
per_video_s = 0.05

[features.clips]
type = "video"
route = ["kling:kling-v2-1", "sim:sim-video"]
attempts = 1
timeout_s = 2

[features.clips-fal]
type = "video"
route = ["fal:fal-ai/kling-video/v2.1/standard/text-to-video"]
attempts = 1

[providers.veo]
kind = "gemini"
base_url = "{fakes}/veo"
api_key_env = "GEMINI_API_KEY"
[providers.veo.tasks]
poll_interval_s = 0.2
poll_interval_cap_s = 0.5

[providers.ark]
kind = "ark"
base_url = "{fakes}/ark"
api_key_env = "ARK_API_KEY"
[providers.ark.tasks]
poll_interval_s = 0.2
poll_interval_cap_s = 0.5

# Two attempts and a fallback each: a submit whose outcome is unknown must use neither.
[features.clips-veo]
type = "video"
route = ["veo:veo-3.0-fast-generate-001", "sim:sim-video"]
attempts = 2

[features.clips-ark]
type = "video"
route = ["ark:doubao-seedance-1-0-pro-250528", "sim:sim-video"]
attempts = 2

# Room for a worker to be killed while its submit waits for Kling's answer.
[features.clips-named]
type = "video"
route = ["kling:kling-v2-1"]
attempts = 1
timeout_s = 40
"""
ENV = {
    "KLING_API_KEY": "test-access|test-secret",
    "FAL_KEY": "fal-test-key-0000",
    "GEMINI_API_KEY": "gemini-test-key-0000",
    "ARK_API_KEY": "ark-test-key-0000",
}


def routing_text(fakes: str, first_poll_s: float = 0.2) -> str:
    return TEST_ROUTING.read_text() + MEDIA_PROVIDERS.format(fakes=fakes, first_poll_s=first_poll_s)


@pytest.fixture(scope="module")
def media_service(
    redis_url: str, s3_endpoint: str, media_fakes_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    workdir = tmp_path_factory.mktemp("media")
    text = routing_text(media_fakes_url)
    with run_service(own_db(redis_url, 1), s3_endpoint, "aijobs-test", text, workdir, ENV) as svc:
        yield svc


@pytest.fixture
async def api(media_service: Service, media_fakes: str) -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient(base_url=media_service.url, headers=media_service.headers()) as client:
        yield client


async def submit(api: httpx2.AsyncClient, feature: str, **input: Any) -> str:
    response = await api.post("/v1/jobs", json={"type": "video", "feature": feature, "input": input})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def wait_for(api: httpx2.AsyncClient, job_id: str, timeout_s: float = 20) -> list[dict[str, Any]]:
    """Every distinct view of the job until it is terminal (the last one is the final job)."""
    views: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout_s):
        while True:
            job = (await api.get(f"/v1/jobs/{job_id}")).json()
            if not views or job != views[-1]:
                views.append(job)
            if job["status"] in ("succeeded", "failed", "canceled"):
                return views
            await asyncio.sleep(0.05)


async def until(
    check: Callable[[], Awaitable[bool]], timeout_s: float = 10, interval_s: float = 0.05
) -> None:
    async with asyncio.timeout(timeout_s):
        while not await check():  # noqa: ASYNC110 (the condition is remote: nothing to wait on)
            await asyncio.sleep(interval_s)


async def job_has(api: httpx2.AsyncClient, job_id: str, name: str, within: str | None = None) -> bool:
    job = (await api.get(f"/v1/jobs/{job_id}")).json()
    return name in (job.get(within) or {} if within else job)


async def upstream_canceled(http: httpx2.AsyncClient, fakes: str) -> bool:
    return bool((await farm(http, fakes))[0]["canceled"])


async def test_a_video_task_is_polled_to_success_and_copied_to_s3(
    api: httpx2.AsyncClient, media_fakes: str
) -> None:
    job_id = await submit(api, "clips", prompt="a fox in the snow", duration_s=5)
    views = await wait_for(api, job_id)
    job = views[-1]
    assert job["status"] == "succeeded", job["error"]
    raw = [v["task"]["raw_status"] for v in views if v.get("task")]
    assert "submitted" in raw or "processing" in raw  # seen while it rendered
    assert job["task"]["raw_status"] == "succeed" and job["progress"] in (None, 1.0)
    video = job["output"]["videos"][0]
    assert video["content_type"] == "video/mp4" and video["duration_s"] == pytest.approx(5, abs=0.5)
    async with httpx2.AsyncClient() as http:
        (task,) = await farm(http, media_fakes)
        upstream = await http.get(f"{media_fakes}/files/{task['id']}/0.mp4")
        ours = await http.get(video["url"])
    assert ours.status_code == 200 and ours.content == upstream.content
    assert ours.headers["content-type"] == "video/mp4"
    assert video["sha256"] == hashlib.sha256(upstream.content).hexdigest()
    assert media_fakes not in str(job["output"])  # users get our URLs, never the provider's
    assert job["usage"]["units"] == video["duration_s"]  # billed on the duration the provider made
    assert job["usage"]["cost_usd"] == pytest.approx(0.05 * video["duration_s"])
    last = job["attempts"][-1]
    assert last["task_id"] == task["id"] and last["raw_status"] == "succeed" and last["polls"] >= 1


async def test_fallback_happens_before_a_task_exists_never_after(
    api: httpx2.AsyncClient, media_fakes: str
) -> None:
    async with httpx2.AsyncClient() as http:
        await inject(http, media_fakes, provider="kling", step="submit", status=500, times=1)
    fell_back = (await wait_for(api, await submit(api, "clips", prompt="first try fails")))[-1]
    assert fell_back["status"] == "succeeded"
    assert fell_back["route"]["fallback_path"] == ["kling:kling-v2-1", "sim:sim-video"]

    refused = (await wait_for(api, await submit(api, "clips", prompt="a [moderate] scene")))[-1]
    assert refused["status"] == "failed"
    assert refused["error"]["code"] == "provider_content_filtered"
    assert refused["route"]["fallback_path"] == ["kling:kling-v2-1"]  # a task existed: no second provider


async def test_a_submit_with_an_unknown_outcome_is_not_resubmitted(
    api: httpx2.AsyncClient, media_fakes: str
) -> None:
    async with httpx2.AsyncClient() as http:
        await inject(http, media_fakes, provider="kling", step="submit", delay_s=3.0, times=1)
    job = (await wait_for(api, await submit(api, "clips", prompt="slow to answer")))[-1]
    assert job["status"] == "failed" and job["error"]["code"] == "provider_timeout"
    assert "may exist upstream" in job["error"]["message"]
    assert [a["provider"] for a in job["attempts"]] == ["kling"]  # no retry, no fallback to the sim


async def test_a_task_past_its_timeout_fails(api: httpx2.AsyncClient, media_fakes: str) -> None:
    job = (await wait_for(api, await submit(api, "clips", prompt="never [hang] done")))[-1]
    assert job["status"] == "failed" and job["error"]["code"] == "provider_timeout"
    assert "within 6 s" in job["error"]["message"]


async def test_cancel_reaches_the_provider(api: httpx2.AsyncClient, media_fakes: str) -> None:
    job_id = await submit(api, "clips-fal", prompt="a long [hang] render")
    await until(lambda: job_has(api, job_id, "task"))
    canceled = await api.post(f"/v1/jobs/{job_id}/cancel")
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    async with httpx2.AsyncClient() as http:
        await until(lambda: upstream_canceled(http, media_fakes))
    await until(lambda: job_has(api, job_id, "upstream_canceled", within="task"))
    job = (await api.get(f"/v1/jobs/{job_id}")).json()
    assert job["task"]["upstream_canceled"] is True and job["status"] == "canceled"


async def test_image_inputs_refuse_internal_urls_and_accept_uploads(
    api: httpx2.AsyncClient, media_fakes: str
) -> None:
    for url in ("http://127.0.0.1:6379/x.png", "http://169.254.169.254/latest/meta-data/"):
        response = await api.post(
            "/v1/jobs", json={"type": "video", "feature": "clips", "input": {"prompt": "p", "image": url}}
        )
        assert response.status_code == 422 and response.json()["error"]["param"] == "input.image"
    png = sim_media.render_image("first frame", 64, 48, "png")
    upload = await api.post(
        "/v1/files", data={"purpose": "vision"}, files={"file": ("f.png", png, "image/png")}
    )
    assert upload.status_code == 200, upload.text
    assert upload.json()["bytes"] == len(png) and upload.json()["content_type"] == "image/png"
    job = (await wait_for(api, await submit(api, "clips", prompt="it moves", image=upload.json()["id"])))[-1]
    assert job["status"] == "succeeded", job["error"]
    async with httpx2.AsyncClient() as http:
        requests = await farm(http, media_fakes, "requests")
    (create,) = [r for r in requests if r["method"] == "POST" and r["path"].endswith("/image2video")]
    assert base64.b64decode(create["json"]["image"]) == png
    text = await api.post("/v1/files", data={"purpose": "vision"}, files={"file": ("f.png", b"not an image")})
    assert (
        text.status_code == 400 and text.json()["error"]["param"] == "file"
    )  # OpenAI's status, as the SDK expects


def test_a_worker_killed_before_the_first_poll_resumes_the_same_task(
    redis_url: str, s3_endpoint: str, media_fakes_url: str, tmp_path: Path
) -> None:
    text = routing_text(media_fakes_url, first_poll_s=2.0)
    with run_service(own_db(redis_url, 2), s3_endpoint, "aijobs-test", text, tmp_path, ENV) as svc:
        final, tasks = asyncio.run(_kill_between_submit_and_poll(svc, media_fakes_url, tmp_path))
    assert final["status"] == "succeeded", final
    mine = [t for t in tasks if t["prompt"] == "survives a crash"]
    assert len(mine) == 1 and mine[0]["id"] == final["task"]["id"]  # exactly one upstream submit
    assert mine[0]["polls"] >= 1


async def _kill_between_submit_and_poll(
    svc: Service, fakes: str, tmp_path: Path
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    async with httpx2.AsyncClient(base_url=svc.url, headers=svc.headers()) as api:
        job_id = await submit(api, "clips", prompt="survives a crash")
        await until(lambda: job_has(api, job_id, "task"), interval_s=0.02)
        job = (await api.get(f"/v1/jobs/{job_id}")).json()
        assert job["task"]["polls"] == 0  # submitted, not yet polled
        worker = svc.processes[1]
        worker.kill()  # SIGKILL: no graceful shutdown
        worker.wait(timeout=10)
        svc.processes[1] = restart(svc, worker, tmp_path / "worker.log")
        final = (await wait_for(api, job_id, timeout_s=30))[-1]
        return final, await farm(api, fakes)


def restart(svc: Service, process: subprocess.Popen[bytes], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(process.args, env=svc.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


@pytest.mark.parametrize(
    ("feature", "provider", "body"),
    [("clips-veo", "veo", "<html>502 Bad Gateway</html>"), ("clips-ark", "ark", '{"status": "accepted"}')],
    ids=["veo-not-json", "ark-no-id"],
)
async def test_a_submit_answered_2xx_unreadably_is_never_made_twice(
    api: httpx2.AsyncClient, media_fakes: str, feature: str, provider: str, body: str
) -> None:
    async with httpx2.AsyncClient() as http:
        await inject(http, media_fakes, provider=provider, step="submit", body=body)
    job = (await wait_for(api, await submit(api, feature, prompt="answered but unreadable")))[-1]
    assert job["status"] == "failed" and job["error"]["code"] == "provider_timeout"
    assert "may exist upstream" in job["error"]["message"]
    assert [a["provider"] for a in job["attempts"]] == [provider]  # no retry, no fallback to the sim
    async with httpx2.AsyncClient() as http:
        tasks = await farm(http, media_fakes)
        creates = [r for r in await farm(http, media_fakes, "requests") if r["method"] == "POST"]
    assert len(tasks) == 1 and len(creates) == 1  # one task upstream, paid once


async def test_seedance_jobs_are_billed_by_their_tokens(api: httpx2.AsyncClient, media_fakes: str) -> None:
    jobs = {}
    for resolution in ("720p", "1080p"):
        job_id = await submit(api, "clips-ark", prompt="a lighthouse", duration_s=5, resolution=resolution)
        jobs[resolution] = (await wait_for(api, job_id))[-1]
        assert jobs[resolution]["status"] == "succeeded", jobs[resolution]["error"]
    for resolution, (width, height) in {"720p": (1248, 704), "1080p": (1920, 1088)}.items():
        usage = jobs[resolution]["usage"]
        assert usage["output_tokens"] == width * height * 24 * 5 // 1024  # Ark's count, from the poll
        assert usage["cost_usd"] == pytest.approx(usage["output_tokens"] * 15 / 1_000_000 * 0.14)
    assert jobs["1080p"]["usage"]["cost_usd"] > 2 * jobs["720p"]["usage"]["cost_usd"]


def crash_routing(fakes: str) -> str:
    """The media routing with short leases: a killed worker's job runs again within 2 s."""
    return routing_text(fakes).replace("[lanes.media]\n", "[lanes.media]\nlease_s = 2\n", 1)


def test_a_worker_killed_while_kling_answers_its_submit_adopts_the_task(
    redis_url: str, s3_endpoint: str, media_fakes_url: str, tmp_path: Path
) -> None:
    """Kling made the task, then the worker died before the answer came: the job's next run finds the
    task by the name the submit gave it (the job id) and polls it, instead of failing or paying twice."""
    fault = {"provider": "kling", "step": "submit", "answer_delay_s": 30}
    with run_service(
        own_db(redis_url, 10), s3_endpoint, "aijobs-test", crash_routing(media_fakes_url), tmp_path, ENV
    ) as svc:
        final, tasks, journal = asyncio.run(
            _killed_mid_submit(svc, media_fakes_url, tmp_path, fault, "clips-named")
        )
    assert final["status"] == "succeeded", final
    (task,) = tasks  # exactly one task upstream
    assert task["body"]["external_task_id"] == final["id"] and final["task"]["id"] == task["id"]
    assert [r["method"] for r in journal if r["path"].endswith("/text2video")] == [
        "POST"
    ]  # never resubmitted
    assert any(r["path"].endswith(f"/text2video/{final['id']}") for r in journal)  # looked up by name
    (attempt,) = final["attempts"]
    assert attempt["adopted"] is True and attempt["task_id"] == task["id"] and attempt["polls"] >= 1
    assert final["route"]["fallback_path"] == ["kling:kling-v2-1"]


def test_a_worker_killed_before_its_submit_reached_kling_submits_it_once_more(
    redis_url: str, s3_endpoint: str, media_fakes_url: str, tmp_path: Path
) -> None:
    """The worker died while Kling had not yet read its request: no task exists under the job's name,
    so the next run submits again, once."""
    fault = {"provider": "kling", "step": "submit", "hold_s": 30}
    with run_service(
        own_db(redis_url, 11), s3_endpoint, "aijobs-test", crash_routing(media_fakes_url), tmp_path, ENV
    ) as svc:
        final, tasks, journal = asyncio.run(
            _killed_mid_submit(svc, media_fakes_url, tmp_path, fault, "clips-named")
        )
    assert final["status"] == "succeeded", final
    (task,) = tasks
    assert task["body"]["external_task_id"] == final["id"] and final["task"]["id"] == task["id"]
    lookups = [
        r for r in journal if r["method"] == "GET" and r["path"].endswith(f"/text2video/{final['id']}")
    ]
    creates = [r for r in journal if r["method"] == "POST"]
    assert len(lookups) == 1 and len(creates) == 1  # asked, found nothing, submitted once
    assert journal.index(lookups[0]) < journal.index(creates[0])
    assert "adopted" not in final["attempts"][-1]


def test_a_worker_killed_mid_submit_to_a_provider_that_cannot_be_asked_fails_the_job(
    redis_url: str, s3_endpoint: str, media_fakes_url: str, tmp_path: Path
) -> None:
    """fal has no way to name a task: after the crash the task may exist, so the job fails instead of
    paying for another."""
    fault = {"provider": "fal", "step": "submit", "answer_delay_s": 30}
    with run_service(
        own_db(redis_url, 12), s3_endpoint, "aijobs-test", crash_routing(media_fakes_url), tmp_path, ENV
    ) as svc:
        final, tasks, journal = asyncio.run(
            _killed_mid_submit(svc, media_fakes_url, tmp_path, fault, "clips-fal")
        )
    assert final["status"] == "failed" and final["error"]["code"] == "provider_timeout"
    assert "may exist upstream" in final["error"]["message"]
    assert len(tasks) == 1 and len([r for r in journal if r["method"] == "POST"]) == 1


async def _killed_mid_submit(
    svc: Service, fakes: str, tmp_path: Path, fault: dict[str, Any], feature: str
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """Submit a job whose submit ``fault`` stalls, SIGKILL the worker while it waits, restart it; the
    final job, the farm's tasks and its journal."""
    async with httpx2.AsyncClient(base_url=svc.url, headers=svc.headers()) as api:
        (await api.post(f"{fakes}/_media/reset")).raise_for_status()
        await inject(api, fakes, **fault)
        job_id = await submit(api, feature, prompt="killed mid-submit", duration_s=5)

        async def stalled() -> bool:  # the request is held unread, or the task exists and its answer waits
            if fault.get("hold_s"):
                return bool((await api.get(f"{fakes}/_media/held")).json()["held"])
            return bool(await farm(api, fakes))

        await until(stalled, interval_s=0.02)
        job = (await api.get(f"/v1/jobs/{job_id}")).json()
        assert job["status"] == "running" and "task" not in job  # submitting: no task id known yet
        worker = svc.processes[1]
        worker.kill()  # SIGKILL: no graceful shutdown
        worker.wait(timeout=10)
        svc.processes[1] = restart(svc, worker, tmp_path / "worker.log")
        final = (await wait_for(api, job_id, timeout_s=40))[-1]
        return final, await farm(api, fakes), await farm(api, fakes, "requests")
