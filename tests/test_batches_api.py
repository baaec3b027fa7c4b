"""The OpenAI Batch API over real HTTP with the official SDK: upload, create, poll, download, cancel."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import orjson
import pytest
from openai import AsyncOpenAI
from redis.asyncio import Redis
from standardwebhooks import Webhook

from aijobs.keys import Keys
from tests.conftest import TEST_ROUTING, Service, own_db, run_service
from tests.fakes.receiver import Receiver, running_receiver
from tests.test_cli import aijobs


@pytest.fixture(scope="module")
def service(redis_url: str, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The service on its own Redis database with the batch lane served, 4 lines of a batch at a time."""
    workdir = tmp_path_factory.mktemp("batches")
    env = {"AIJOBS_BATCH_WINDOW": "4", "AIJOBS_OUTBOUND_ALLOW": "127.0.0.2/32"}  # the webhook receiver's
    text = TEST_ROUTING.read_text()
    lanes = "interactive,batch,webhooks"
    with run_service(own_db(redis_url, 5), s3_endpoint, "aijobs-test", text, workdir, env, lanes) as svc:
        yield svc


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with running_receiver("127.0.0.2") as running:
        yield running


@pytest.fixture
async def sdk(service: Service) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=f"{service.url}/v1", api_key=service.key, max_retries=0) as client:
        yield client


def jsonl(count: int, model: str = "gpt-4o-mini") -> bytes:
    lines = [
        {"custom_id": f"q{i}", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": model, "messages": [{"role": "user", "content": f"question number {i}"}]}}
        for i in range(count)
    ]  # fmt: skip
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


async def settled(sdk: AsyncOpenAI, batch_id: str, timeout_s: float = 60) -> Any:
    for _ in range(int(timeout_s * 10)):
        batch = await sdk.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch
        await asyncio.sleep(0.1)
    raise AssertionError(f"batch {batch_id} still {batch.status}")


def parsed(content: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in content.splitlines()]


async def test_a_batch_runs_every_line_once_on_the_batch_lane(sdk: AsyncOpenAI, service: Service) -> None:
    uploaded = await sdk.files.create(file=("in.jsonl", jsonl(10)), purpose="batch")
    batch = await sdk.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h",
        metadata={"run": "nightly"},
    )  # fmt: skip
    assert batch.status in ("validating", "in_progress") and batch.metadata == {"run": "nightly"}
    done = await settled(sdk, batch.id)
    assert done.status == "completed" and done.error_file_id is None
    counts = done.request_counts
    assert counts is not None and (counts.total, counts.completed, counts.failed) == (10, 10, 0)
    output = parsed((await sdk.files.content(done.output_file_id)).content)
    assert sorted(line["custom_id"] for line in output) == sorted(f"q{i}" for i in range(10))  # each once
    first = output[0]
    assert first["response"]["status_code"] == 200 and first["error"] is None
    assert first["response"]["body"]["object"] == "chat.completion"
    assert first["response"]["body"]["choices"][0]["message"]["content"]
    async with httpx2.AsyncClient(base_url=service.url, headers=service.headers()) as api:
        job = (await api.get(f"/v1/jobs/{first['response']['request_id']}")).json()
        usage = (await api.get("/v1/usage", params={"group_by": "batch"})).json()
    [ours] = [row for row in usage["data"] if row["key"] == batch.id]  # every line, in the ledger
    assert ours["jobs"] == ours["succeeded"] == 10 and ours["cost_usd"] > 0 and ours["cost_known"]
    assert job["feature"] == "background"  # the batch lane's feature: cheapest targets first
    assert job["metadata"] == {"batch_id": batch.id, "custom_id": first["custom_id"]}
    listed = await sdk.batches.list(limit=100)
    assert batch.id in [b.id for b in listed.data]


async def test_cancel_stops_new_lines_and_reports_the_rest(sdk: AsyncOpenAI) -> None:
    uploaded = await sdk.files.create(file=("slow.jsonl", jsonl(12)), purpose="batch")
    batch = await sdk.batches.with_raw_response.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h",
        extra_body={"feature": "slow-chat"},  # 2.5 s a line; the test service runs 4 lines at once
    )  # fmt: skip
    batch_id = batch.parse().id
    await asyncio.sleep(1.0)
    cancelling = await sdk.batches.cancel(batch_id)
    assert cancelling.status == "cancelling"
    done = await settled(sdk, batch_id)
    assert done.status == "cancelled" and done.cancelled_at is not None
    counts = done.request_counts
    assert counts is not None and counts.total == 12 and counts.completed == 4
    output = parsed((await sdk.files.content(done.output_file_id)).content)
    errors = parsed((await sdk.files.content(done.error_file_id)).content)
    assert len(output) == 4 and len(errors) == 8
    assert {line["custom_id"] for line in output + errors} == {f"q{i}" for i in range(12)}
    assert all(line["error"]["code"] == "batch_cancelled" for line in errors)
    with pytest.raises(openai.ConflictError):
        await sdk.batches.cancel(batch_id)


async def test_bad_batch_requests_are_refused(sdk: AsyncOpenAI) -> None:
    uploaded = await sdk.files.create(file=("in.jsonl", jsonl(1)), purpose="batch")
    with pytest.raises(openai.BadRequestError, match="endpoint"):
        await sdk.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h"
        )
    with pytest.raises(openai.NotFoundError):
        await sdk.batches.create(
            input_file_id="file_missing", endpoint="/v1/chat/completions", completion_window="24h"
        )
    soon: Any = "soon"
    with pytest.raises(openai.BadRequestError, match="completion_window"):
        await sdk.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window=soon
        )
    with pytest.raises(openai.NotFoundError):
        await sdk.batches.retrieve("batch_unknown")


async def test_a_batch_past_its_window_expires_keeping_what_finished(
    sdk: AsyncOpenAI, redis_url: str
) -> None:
    uploaded = await sdk.files.create(file=("slow.jsonl", jsonl(12)), purpose="batch")
    one_hour: Any = "1h"  # ours; the SDK's type knows only OpenAI's "24h"
    raw = await sdk.batches.with_raw_response.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window=one_hour,
        extra_body={"feature": "slow-chat"},
    )  # fmt: skip
    batch_id = raw.parse().id
    await asyncio.sleep(0.5)
    redis = Redis.from_url(own_db(redis_url, 5))
    try:  # an hour passes
        await redis.hset(Keys.batch(batch_id), "expires_at", repr(time.time() - 1))
    finally:
        await redis.aclose()
    done = await settled(sdk, batch_id)
    assert done.status == "expired" and done.expired_at is not None
    assert done.request_counts is not None and done.request_counts.completed == 4
    output = parsed((await sdk.files.content(done.output_file_id)).content)
    errors = parsed((await sdk.files.content(done.error_file_id)).content)
    assert len(output) == 4 and [line["error"]["code"] for line in errors] == ["batch_expired"] * 8
    assert {line["custom_id"] for line in output + errors} == {f"q{i}" for i in range(12)}


def test_the_cli_submits_follows_and_downloads_a_batch(service: Service, tmp_path: Path) -> None:
    requests = tmp_path / "requests.jsonl"
    requests.write_bytes(jsonl(6))
    env = {**service.env, "AIJOBS_KEY": service.key, "AIJOBS_PUBLIC_URL": service.url}
    submitted = aijobs("batch", "submit", str(requests), "--wait", "60", env=env)
    assert submitted.returncode == 0, submitted.stderr
    batch = json.loads(submitted.stdout)
    assert batch["status"] == "completed" and "] 6/6 lines, 0 failed (completed)" in submitted.stderr
    assert json.loads(aijobs("batch", "status", batch["id"], env=env).stdout)["id"] == batch["id"]
    out, errors = tmp_path / "out.jsonl", tmp_path / "errors.jsonl"
    fetched = aijobs("batch", "results", batch["id"], "-o", str(out), "--errors", str(errors), env=env)
    assert fetched.returncode == 0 and "completed: 6 completed, 0 failed" in fetched.stderr
    assert sorted(orjson.loads(line)["custom_id"] for line in out.read_bytes().splitlines()) == [
        f"q{i}" for i in range(6)
    ]
    assert errors.read_bytes() == b""
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(
        jsonl(1) + b'{"custom_id": "x", "method": "GET", "url": "/v1/chat/completions", "body": {}}\n'
    )
    refused = aijobs("batch", "submit", str(bad), env=env)
    assert refused.returncode == 2 and "line 2: method: must be POST" in refused.stderr


async def test_a_native_batch_runs_image_and_speech_inputs(service: Service) -> None:
    async with httpx2.AsyncClient(base_url=service.url, headers=service.headers(), timeout=30) as api:
        images = await api.post("/v1/batches", json={
            "type": "image", "inputs": [{"prompt": f"a red fox {i}", "size": "256x256"} for i in range(5)],
            "completion_window": "2h", "metadata": {"run": "catalog"},
        })  # fmt: skip
        speech = await api.post("/v1/batches", json={"feature": "speech", "inputs": [{"text": "hello"}] * 2})
        assert images.status_code == speech.status_code == 200, images.text + speech.text
        made = images.json()
        assert (made["endpoint"], made["type"], made["feature"]) == ("/v1/jobs", "image", "images")
        assert made["request_counts"]["total"] == 5 and made["metadata"] == {"run": "catalog"}
        for batch, count in ((made, 5), (speech.json(), 2)):
            done = await _native_settled(api, batch["id"])
            assert done["status"] == "completed" and done["error_file_id"] is None
            assert done["request_counts"] == {"total": count, "completed": count, "failed": 0}
            content = await api.get(f"/v1/files/{done['output_file_id']}/content")
            lines = parsed(content.content)
            assert [line["index"] for line in lines] == list(range(count))
            assert {line["status"] for line in lines} == {"succeeded"} and len(
                {ln["job_id"] for ln in lines}
            ) == count
            job = (await api.get(f"/v1/jobs/{lines[0]['job_id']}")).json()
            assert job["metadata"] == {"batch_id": batch["id"], "batch_index": "0"}
        usage = {row["key"]: row for row in (await api.get("/v1/usage?group_by=batch")).json()["data"]}
        pictures = usage[made["id"]]  # no price is configured for sim:image: said so, not a silent 0
        assert (pictures["jobs"], pictures["units"], pictures["cost_unknown_jobs"]) == (5, 5, 5)
        assert pictures["cost_known"] is False
        media = lines[0]["output"]["audio"]
        async with httpx2.AsyncClient() as anyone:  # the signed URL needs no key
            audio = await anyone.get(media["url"])
        assert audio.status_code == 200 and audio.content[:4] == b"RIFF"


async def _native_settled(api: httpx2.AsyncClient, batch_id: str) -> dict[str, Any]:
    for _ in range(600):
        batch: dict[str, Any] = (await api.get(f"/v1/batches/{batch_id}")).json()
        if batch["status"] in ("completed", "failed", "expired", "cancelled"):
            return batch
        await asyncio.sleep(0.1)
    raise AssertionError(f"batch {batch_id} still running")


async def test_a_native_batch_with_bad_inputs_is_refused_naming_each(service: Service) -> None:
    async with httpx2.AsyncClient(base_url=service.url, headers=service.headers(), timeout=30) as api:
        inputs = [
            {"prompt": "fine"},
            {"prompt": ""},
            {"prompt": "fine"},
            {"promt": "typo"},
            {"prompt": "x", "image": "ftp://x"},
        ]
        bad = await api.post("/v1/batches", json={"type": "image", "inputs": inputs})
        assert bad.status_code == 400
        error = bad.json()["error"]
        assert error["param"] == "inputs.1.prompt" and "3 bad input(s)" in error["message"]
        assert [(d["index"], d["param"]) for d in error["details"]] == [
            (1, "inputs.1.prompt"),
            (3, "inputs.3.prompt"),
            (4, "inputs.4.image"),
        ]
        refusals = {
            "type": {"inputs": [{"text": "hi"}]},
            "feature": {"type": "chat", "feature": "speech", "inputs": [{"text": "hi"}]},
            "inputs": {"type": "speech", "inputs": []},
            "completion_window": {"type": "speech", "inputs": [{"text": "hi"}], "completion_window": "2d"},
        }
        for param, body in refusals.items():
            refused = await api.post("/v1/batches", json=body)
            assert refused.status_code == 400 and refused.json()["error"]["param"] == param, (
                param,
                refused.text,
            )


async def test_a_batch_is_followed_live_and_its_ending_reaches_webhooks(
    sdk: AsyncOpenAI, service: Service, receiver: Receiver
) -> None:
    async with httpx2.AsyncClient(base_url=service.url, headers=service.headers(), timeout=30) as api:
        made = await api.post(
            "/v1/webhooks", json={"url": receiver.url("/batches"), "events": ["batch.completed"]}
        )
        assert made.status_code == 201, made.text
        secret = made.json()["secret"]
        uploaded = await sdk.files.create(file=("live.jsonl", jsonl(12)), purpose="batch")
        batch = await sdk.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        frames: list[tuple[str, dict[str, Any]]] = []
        async with api.stream("GET", f"/v1/batches/{batch.id}/events") as events:
            assert events.headers["content-type"].startswith("text/event-stream")
            kind = ""
            async for line in events.aiter_lines():
                if line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    frames.append((kind, orjson.loads(line.removeprefix("data: "))))
        kinds = [kind for kind, _ in frames]
        assert kinds[0] in ("batch.validating", "batch.in_progress") and kinds[-1] == "batch.completed"
        assert "batch.progress" in kinds  # 12 lines, 4 at a time: progress shows between ticks
        done = [frame["data"]["request_counts"]["completed"] for _, frame in frames]
        assert done == sorted(done) and done[-1] == 12
        [request] = await receiver.wait_for("/batches", 1)
        payload = Webhook(secret).verify(request.body, request.headers)
        assert payload["type"] == "batch.completed" and payload["data"]["id"] == batch.id
        assert payload["data"]["request_counts"]["completed"] == 12
        assert payload["data"]["output_file_id"]
        for nope in ("batch_nope", f"{batch.id}:lines", f"{batch.id}:open"):  # not a batch's own record
            for path in (f"/v1/batches/{nope}", f"/v1/batches/{nope}/events"):
                missing = await api.get(path)
                assert missing.status_code == 404 and missing.json()["error"]["param"] == "batch_id", path
        chat = {"messages": [{"role": "user", "content": "hi"}]}
        forged = {"type": "chat", "input": chat, "metadata": {"batch_id": batch.id}}
        refused = await api.post("/v1/jobs", json=forged)  # a line's batch_id is the service's to set
        assert refused.status_code == 422 and refused.json()["error"]["param"] == "metadata"
        refused = await api.post(
            "/v1/chat/completions", json={**chat, "model": "sim:fast", "metadata": {"batch_id": "b"}}
        )
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "metadata"
        await asyncio.sleep(0.3)
        assert len(receiver.received("/batches")) == 1  # the endpoint wanted nothing else (no line's job.*)
