"""Following a job live: server-sent events (with Last-Event-ID) and ``Prefer: wait``."""

from __future__ import annotations

import time
from typing import Any

import httpx2
import orjson
import pytest
from redis.asyncio import Redis

from aijobs.events import JobEvents
from aijobs.jobs import JobStatus
from aijobs.keys import Keys
from aijobs.queue import WEBHOOK_FANOUT, WEBHOOK_LANE, queue_name
from aijobs.store import JobStore

CHAT = {"messages": [{"role": "user", "content": "hello"}]}


async def read_events(
    client: httpx2.AsyncClient, job_id: str, last_event_id: str | None = None, stop_after: int | None = None
) -> list[dict[str, Any]]:
    """``GET /v1/jobs/{id}/events`` as ``{id, event, data}`` dicts, until it ends (or ``stop_after``)."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    async with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=20) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if not line:
                if "event" in current:
                    events.append(current)
                    if stop_after is not None and len(events) == stop_after:
                        return events
                current = {}
                continue
            field, _, value = line.partition(": ")
            if field == "data":
                current["data"] = orjson.loads(value)
            elif field in ("id", "event"):
                current[field] = value
    return events


async def submit(client: httpx2.AsyncClient, feature: str, **headers: str) -> httpx2.Response:
    return await client.post(
        "/v1/jobs", json={"type": "chat", "feature": feature, "input": CHAT}, headers=headers
    )


async def test_sse_sees_running_then_succeeded_and_ends(client: httpx2.AsyncClient) -> None:
    job = (await submit(client, "slow-chat")).json()  # 2.5 s upstream: followed live, not replayed
    events = await read_events(client, job["id"])
    assert [e["event"] for e in events] == ["job.queued", "job.running", "job.succeeded"]
    final = events[-1]["data"]
    assert final["type"] == "job.succeeded" and final["id"] == events[-1]["id"]
    assert final["data"]["status"] == "succeeded" and final["data"]["output"]["message"]["content"]
    assert events[1]["data"]["data"]["status"] == "running"
    ids = [e["id"] for e in events]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))


async def test_sse_resumes_after_last_event_id(client: httpx2.AsyncClient) -> None:
    job = (await submit(client, "slow-chat")).json()
    first_two = await read_events(client, job["id"], stop_after=2)  # the client drops after "running"
    assert [e["event"] for e in first_two] == ["job.queued", "job.running"]
    rest = await read_events(client, job["id"], last_event_id=first_two[-1]["id"])
    assert [e["event"] for e in rest] == ["job.succeeded"]
    again = await read_events(client, job["id"], last_event_id=rest[-1]["id"])
    assert again == []  # resumed after the terminal event: the stream ends at once


async def test_sse_of_a_failed_job_ends_with_its_error(client: httpx2.AsyncClient) -> None:
    job = (await submit(client, "broken-chat")).json()
    events = await read_events(client, job["id"])
    assert events[-1]["event"] == "job.failed"
    assert events[-1]["data"]["data"]["error"]["code"]


async def test_sse_refuses_bad_ids_and_other_tenants(client: httpx2.AsyncClient, service: Any) -> None:
    job = (await submit(client, "support-chat")).json()
    bad = await client.get(f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": "yesterday"})
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "Last-Event-ID"
    other = await client.get(f"/v1/jobs/{job['id']}/events", headers=service.headers(service.other_key))
    assert other.status_code == 404


async def test_prefer_wait_returns_the_finished_job_inline(client: httpx2.AsyncClient) -> None:
    started = time.monotonic()
    response = await submit(client, "support-chat", Prefer="wait=10")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "succeeded" and response.json()["output"]["message"]["content"]
    assert response.headers["preference-applied"] == "wait=10"
    assert time.monotonic() - started < 5


async def test_prefer_wait_times_out_into_the_usual_202(client: httpx2.AsyncClient) -> None:
    started = time.monotonic()
    response = await submit(client, "slow-chat", Prefer="respond-async, wait=1")
    assert response.status_code == 202
    assert response.json()["status"] in ("queued", "running")
    assert 0.9 < time.monotonic() - started < 2.5


@pytest.mark.parametrize("value", ["wait=61", "wait=-1", "wait=soon"])
async def test_prefer_wait_out_of_range_is_a_422(client: httpx2.AsyncClient, value: str) -> None:
    response = await submit(client, "support-chat", Prefer=value)
    assert response.status_code == 422
    assert response.json()["error"]["param"] == "Prefer"


async def test_progress_and_status_events_come_from_the_same_script(redis: Redis) -> None:
    """Each change appends its event atomically; a canceled job re-recorded is not a second event."""
    store = JobStore(redis, 3600)
    created = await store.create(tenant="t", type="video", feature="f", lane="media", input={}, metadata={})
    job_id = created.job.id
    await store.transition(job_id, JobStatus.RUNNING)
    await store.update(job_id, JobStatus.RUNNING, {"task": {"state": "running"}}, progress=0.25)
    await store.update(job_id, JobStatus.RUNNING, {"task": {"state": "running"}})  # no news: no event
    await store.transition(job_id, JobStatus.CANCELED)
    await store.transition(job_id, JobStatus.CANCELED, allowed_from={JobStatus.CANCELED}, fields={"runs": 1})
    events = await JobEvents(redis).after(job_id)
    assert [(e.type, e.status.value, e.progress) for e in events] == [
        ("job.queued", "queued", None),
        ("job.running", "running", None),
        ("job.progress", "running", 0.25),
        ("job.canceled", "canceled", None),
    ]
    assert await redis.ttl(Keys.events(job_id)) == 3600  # expires with the record
    # no webhook and no endpoints: nothing was enqueued for the webhooks lane
    assert not [m for m in await redis.zrange(queue_name(WEBHOOK_LANE), 0, -1) if job_id.encode() in m]


async def test_the_fanout_payload_is_arqs_own_format(redis: Redis) -> None:
    store = JobStore(redis, 3600)
    webhook = {"url": "https://example.com/h", "events": ["job.running"]}
    created = await store.create(
        tenant="t2", type="chat", feature="f", lane="interactive", input={}, metadata={}, webhook=webhook
    )
    await store.transition(created.job.id, JobStatus.RUNNING)
    [running] = [e for e in await JobEvents(redis).after(created.job.id) if e.type == "job.running"]
    arq_id = f"hook:{created.job.id}:{running.id}"
    assert await redis.zscore(queue_name(WEBHOOK_LANE), arq_id) is not None
    payload = orjson.loads(await redis.get(f"arq:job:{arq_id}"))
    assert (
        payload["f"] == WEBHOOK_FANOUT
        and payload["a"] == [created.job.id, running.id, "job.running"]
        and payload["k"] == {}
    )
    assert abs(payload["et"] / 1000 - time.time()) < 5
