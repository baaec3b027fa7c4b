"""Batches handed to a provider's own batch API (OpenAI's protocol, served by a faithful fake) by features
that opt in: answered lines come back as jobs at the batch price, the rest run here, cancel reaches
the provider, and a refused handoff runs every line here."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest
from openai import AsyncOpenAI
from redis.asyncio import Redis

from aijobs.batches import Batch, BatchStore, new_batch_id
from aijobs.batchlines import LineJob
from aijobs.batchrun import BatchDriver
from aijobs.handoff import Handoff
from aijobs.jobs import JobStatus
from aijobs.keys import Keys
from aijobs.ledger import day_of
from aijobs.providers.base import ProviderContext
from aijobs.providers.openai import OpenAIChat
from aijobs.providers.openai_batch import OpenAIBatches
from aijobs.routing import load_policy
from aijobs.store import JobStore
from tests.conftest import TEST_ROUTING, Service, own_db, run_service
from tests.fakes.openai_batches import KEY, Fakes
from tests.fakes.server import fake_providers_server
from tests.test_batches_api import parsed, settled

PRICE_IN, PRICE_OUT = 1.0, 2.0  # USD per million tokens
ROUTING = """
[providers.obatch]
kind = "openai"
base_url = "{url}/v1"
api_key_env = "OBATCH_KEY"
batch_api = true
batch_poll_s = 0.1

[providers.obatch.prices.gpt-4o-mini]
input_per_mtok = 1.0
output_per_mtok = 2.0

[features.nightly]
type = "chat"
lane = "batch"
route = ["obatch:gpt-4o-mini"]
provider_batch = true
attempts = 1
requeues = 0
"""


@pytest.fixture(scope="module")
def fakes() -> Fakes:
    return Fakes()


@pytest.fixture(scope="module")
def service(
    redis_url: str, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory, fakes: Fakes
) -> Iterator[Service]:
    workdir = tmp_path_factory.mktemp("handoff")
    with fake_providers_server(fakes.app()) as url:
        text = TEST_ROUTING.read_text() + ROUTING.replace("{url}", url)
        env = {"OBATCH_KEY": KEY, "AIJOBS_BATCH_WINDOW": "8"}
        with run_service(
            own_db(redis_url, 7), s3_endpoint, "aijobs-test", text, workdir, env, "batch"
        ) as svc:
            yield svc


@pytest.fixture
async def sdk(service: Service) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=f"{service.url}/v1", api_key=service.key, max_retries=0) as client:
        yield client


@pytest.fixture(autouse=True)
def clean_knobs(fakes: Fakes) -> Iterator[None]:
    yield
    fakes.fail_batches = False
    fakes.create_faults, fakes.cancel_faults = [], []
    fakes.answer_limit = fakes.lines_per_poll = 1_000_000


def lines(questions: list[str]) -> bytes:
    return b"".join(
        orjson.dumps({"custom_id": f"q{i}", "method": "POST", "url": "/v1/chat/completions",
                      "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": q}]}}) + b"\n"
        for i, q in enumerate(questions)
    )  # fmt: skip


async def submit(sdk: AsyncOpenAI, questions: list[str]) -> str:
    uploaded = await sdk.files.create(file=("in.jsonl", lines(questions)), purpose="batch")
    batch = await sdk.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h",
        extra_body={"feature": "nightly"},
    )  # fmt: skip
    return batch.id


async def view(service: Service, path: str) -> Any:
    async with httpx2.AsyncClient(base_url=service.url, headers=service.headers()) as api:
        answer = await api.get(path)
        assert answer.status_code == 200, answer.text
        return answer.json()


def content(line: dict[str, Any]) -> str:
    return str(line["response"]["body"]["choices"][0]["message"]["content"])


async def test_answered_lines_come_back_at_the_batch_price_and_the_rest_run_here(
    sdk: AsyncOpenAI, service: Service, fakes: Fakes
) -> None:
    created = fakes.created
    questions = [f"question {i}" for i in range(10)] + ["flaky [[500]]", "refused [[400]]"]
    done = await settled(sdk, await submit(sdk, questions))
    assert done.status == "completed", done
    assert fakes.created == created + 1  # one provider batch for the whole
    counts = done.request_counts
    assert counts is not None and (counts.total, counts.completed, counts.failed) == (12, 11, 1)
    output = {
        line["custom_id"]: line for line in parsed((await sdk.files.content(done.output_file_id)).content)
    }
    [refused] = parsed((await sdk.files.content(done.error_file_id)).content)
    assert refused["custom_id"] == "q11" and refused["response"]["status_code"] == 400
    assert sorted(output) == sorted(f"q{i}" for i in range(11))
    assert all(content(output[f"q{i}"]) == f"batch answer to: question {i}" for i in range(10))
    assert content(output["q10"]) == "answer to: flaky [[500]]"  # the provider's 500: run here instead
    batch = await view(service, f"/v1/batches/{done.id}")
    assert (
        batch["provider_batch"]["provider"] == "obatch" and batch["provider_batch"]["status"] == "completed"
    )
    job = await view(service, f"/v1/jobs/{output['q0']['response']['request_id']}")
    assert job["status"] == "succeeded" and job["route"]["provider_batch"].startswith("batch_fake_")
    usage = job["usage"]
    full = (usage["input_tokens"] * PRICE_IN + usage["output_tokens"] * PRICE_OUT) / 1e6
    assert usage["cost_usd"] == pytest.approx(full * 0.5)  # the provider's batch price
    here = await view(service, f"/v1/jobs/{output['q10']['response']['request_id']}")
    assert "provider_batch" not in here["route"] and here["usage"]["cost_usd"] == pytest.approx(
        (here["usage"]["input_tokens"] * PRICE_IN + here["usage"]["output_tokens"] * PRICE_OUT) / 1e6
    )
    rows = (await view(service, "/v1/usage?group_by=batch"))["data"]
    [row] = [r for r in rows if r["key"] == done.id]
    assert row["jobs"] == 12 and row["succeeded"] == 11 and row["cost_known"]


async def test_a_refused_handoff_runs_every_line_here(
    sdk: AsyncOpenAI, service: Service, fakes: Fakes
) -> None:
    fakes.create_faults = [400]
    created = fakes.created
    done = await settled(sdk, await submit(sdk, [f"q {i}" for i in range(5)]))
    assert done.status == "completed" and fakes.created == created
    output = parsed((await sdk.files.content(done.output_file_id)).content)
    assert sorted(content(line) for line in output) == [f"answer to: q {i}" for i in range(5)]
    batch = await view(service, f"/v1/batches/{done.id}")
    assert batch["provider_batch"]["status"] is None  # never made there


async def test_a_create_whose_answer_was_lost_makes_one_batch_there(sdk: AsyncOpenAI, fakes: Fakes) -> None:
    fakes.create_faults = ["lost"]  # made there, but the answer was lost on the way back
    created = fakes.created
    done = await settled(sdk, await submit(sdk, [f"q {i}" for i in range(4)]))
    assert done.status == "completed" and fakes.created == created + 1  # found, not made again
    output = parsed((await sdk.files.content(done.output_file_id)).content)
    assert sorted(content(line) for line in output) == [f"batch answer to: q {i}" for i in range(4)]


async def test_a_provider_batch_that_failed_runs_every_line_here(sdk: AsyncOpenAI, fakes: Fakes) -> None:
    fakes.fail_batches = True
    done = await settled(sdk, await submit(sdk, [f"q {i}" for i in range(5)]))
    assert done.status == "completed"
    output = parsed((await sdk.files.content(done.output_file_id)).content)
    assert sorted(content(line) for line in output) == [f"answer to: q {i}" for i in range(5)]


async def test_cancel_reaches_the_provider_and_keeps_what_it_answered(
    sdk: AsyncOpenAI, service: Service, fakes: Fakes
) -> None:
    fakes.answer_limit = 3  # then the provider's batch stalls in progress
    fakes.cancel_faults = [503]  # the first cancel there fails: it is sent again
    cancels = fakes.cancels
    batch_id = await submit(sdk, [f"q {i}" for i in range(8)])
    for _ in range(100):  # until the provider has answered its three
        remote = (await view(service, f"/v1/batches/{batch_id}"))["provider_batch"]
        if remote and remote["completed"] == 3:
            break
        await asyncio.sleep(0.1)
    await sdk.batches.cancel(batch_id)
    done = await settled(sdk, batch_id)
    assert done.status == "cancelled" and fakes.cancels == cancels + 1
    output = parsed((await sdk.files.content(done.output_file_id)).content)
    errors = parsed((await sdk.files.content(done.error_file_id)).content)
    assert sorted(line["custom_id"] for line in output) == ["q0", "q1", "q2"]
    assert sorted(line["custom_id"] for line in errors) == [f"q{i}" for i in range(3, 8)]
    assert all(line["error"]["code"] == "batch_cancelled" for line in errors)


async def test_a_native_batch_is_handed_over_too(service: Service) -> None:
    inputs = [{"messages": [{"role": "user", "content": f"native {i}"}]} for i in range(3)]
    async with httpx2.AsyncClient(base_url=service.url, headers=service.headers()) as api:
        made = await api.post("/v1/batches", json={"feature": "nightly", "inputs": inputs})
        assert made.status_code == 200, made.text
        for _ in range(300):
            batch = (await api.get(f"/v1/batches/{made.json()['id']}")).json()
            if batch["status"] == "completed":
                break
            await asyncio.sleep(0.1)
        assert batch["status"] == "completed", batch
        results = parsed((await api.get(f"/v1/files/{batch['output_file_id']}/content")).content)
    answers = {r["index"]: r["output"]["message"]["content"] for r in results}
    assert answers == {i: f"batch answer to: native {i}" for i in range(3)}


async def test_a_retried_tick_records_each_answered_line_once(redis: Redis, tmp_path: Path) -> None:
    path = tmp_path / "routing.toml"
    path.write_text(TEST_ROUTING.read_text() + ROUTING.replace("{url}", "http://127.0.0.1:9"))
    routing = load_policy(path, {"OBATCH_KEY": KEY})
    config = routing.config.providers["obatch"]
    async with httpx2.AsyncClient() as http:
        api = OpenAIBatches(OpenAIChat(ProviderContext("obatch", config, KEY, http, {})))
        batches, store = BatchStore(redis, 3600), JobStore(redis, 3600)
        driver = BatchDriver(batches, store, None, None, 8, Handoff(routing, {"obatch": api}, batches))  # type: ignore[arg-type]
        now = time.time()
        remote = {"stage": "collected", "provider": "obatch", "model": "gpt-4o-mini", "id": "batch_fake_x",
                  "handed_at": now - 5, "ended_at": now}  # fmt: skip
        batch = Batch(new_batch_id(), "acme", "/v1/chat/completions", "file_x", "24h", "nightly", now,
                      now + 3600, total=3, remote=remote)  # fmt: skip
        await batches.create(batch)
        answer = {"choices": [{"message": {"content": "yes"}, "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": 3, "completion_tokens": 1}}  # fmt: skip
        results = {
            str(n): orjson.dumps({"custom_id": str(n), "response": {"status_code": 200, "body": answer}})
            for n in range(3)
        }
        await redis.hset(Keys.batch_answers(batch.id), mapping=results)  # type: ignore[misc]
        lines = {n: LineJob({"messages": [{"role": "user", "content": f"q{n}"}]}, {"custom_id": f"q{n}"})
                 for n in range(3)}  # fmt: skip
        assert await Handoff(routing, {}, batches).answers(batch, [0]) == {}  # the provider lost batch_api
        stopped = store.new_id(now)  # a tick that mapped line 0, then stopped before recording its job
        await batches.claim(batch, {0: (stopped, JobStatus.SUCCEEDED)})
        assert await driver._record_answered(batch, lines) == {0, 1, 2}
        assert await driver._record_answered(batch, lines) == {0, 1, 2}  # the tick again
        twice = [driver._record_answered(batch, lines) for _ in range(2)]  # and delivered twice at once
        assert await asyncio.gather(*twice) == [{0, 1, 2}] * 2
    found = await batches.get(batch.id)
    assert found is not None and (found.completed, found.failed) == (3, 0)  # each line counted once
    jobs = await batches.line_jobs(batch.id, 0, 3)
    assert jobs[0] == stopped and None not in jobs
    assert await store.statuses(jobs) == [JobStatus.SUCCEEDED] * 3  # type: ignore[arg-type]
    records = [orjson.loads(fields[b"r"]) for _, fields in await redis.xrange(Keys.ledger(day_of(now)))]
    ours = [r["id"] for r in records if r["batch_id"] == batch.id]
    assert sorted(ours) == sorted(jobs)  # type: ignore[type-var]  # one ledger record per line
