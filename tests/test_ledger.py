"""The ledger in a real Redis: written with the terminal status, aggregated by group, exported as JSONL."""

from __future__ import annotations

import time
import uuid
from datetime import date
from pathlib import Path

import orjson
from redis.asyncio import Redis

from aijobs import ledger, usage
from aijobs.jobs import Job, JobStatus
from aijobs.keys import Keys
from aijobs.ledger import day_of
from aijobs.storage import LocalStore
from aijobs.store import JobStore

ATTEMPTS = [
    {
        "provider": "a",
        "model": "m1",
        "latency_ms": 10.0,
        "outcome": "error",
        "error_code": "provider_timeout",
    },
    {
        "provider": "a",
        "model": "m1",
        "latency_ms": 12.0,
        "outcome": "error",
        "error_code": "provider_timeout",
    },
    {"provider": "b", "model": "m2", "latency_ms": 30.0, "outcome": "ok", "error_code": None},
]
USAGE = {
    "input_tokens": 100,
    "output_tokens": 20,
    "cached_tokens": 40,
    "reasoning_tokens": 5,
    "cost_usd": 0.25,
}


async def running_job(store: JobStore, tenant: str, feature: str = "f1") -> Job:
    created = await store.create(
        tenant=tenant, type="chat", feature=feature, lane="interactive", input={}, metadata={}
    )
    claim = await store.transition(created.job.id, JobStatus.RUNNING, want_record=True)
    assert claim.job is not None
    return claim.job


def test_an_entry_records_retries_fallbacks_and_the_path() -> None:
    job = Job("job_x", "t", "chat", "f1", "interactive", JobStatus.RUNNING, 100.0, {}, started_at=100.5)
    entry = ledger.entry(
        job, JobStatus.SUCCEEDED, attempts=ATTEMPTS, usage=USAGE, target=("b", "m2"), finished_at=101.0
    )
    record = entry.record
    assert record["provider"] == "b" and record["model"] == "m2" and record["status"] == "succeeded"
    assert (record["attempts"], record["retries"], record["fallbacks"]) == (3, 1, 1)
    assert record["fallback_path"] == [
        {"target": "a:m1", "attempts": 2, "outcome": "provider_timeout"},
        {"target": "b:m2", "attempts": 1, "outcome": "ok"},
    ]
    assert record["queue_ms"] == 500.0 and record["latency_ms"] == 500.0 and record["total_ms"] == 1000.0
    assert record["cost_usd"] == 0.25 and record["cost_known"] and record["cached_tokens"] == 40
    assert entry.cost_usd == 0.25 and entry.feature == "f1"


async def test_the_entry_is_written_with_the_status_change_and_only_then(redis: Redis) -> None:
    store = JobStore(redis, job_ttl_s=600)
    tenant = f"t{uuid.uuid4().hex[:8]}"
    job = await running_job(store, tenant)
    day = day_of(time.time())
    before = await redis.xlen(Keys.ledger(day))
    entry = ledger.entry(job, JobStatus.SUCCEEDED, attempts=ATTEMPTS, usage=USAGE, target=("b", "m2"))
    assert (await store.transition(job.id, JobStatus.SUCCEEDED, ledger=entry)).ok
    again = await store.transition(job.id, JobStatus.SUCCEEDED, ledger=entry)  # a duplicate finish
    assert not again.ok
    assert await redis.xlen(Keys.ledger(day)) == before + 1
    spent = float(await redis.hget(Keys.spend(day), "f1") or 0)  # type: ignore[misc]
    assert spent >= 0.25
    assert await redis.ttl(Keys.usage(day)) > 30 * 86400


async def test_usage_groups_cells_and_scopes_them_to_a_tenant(redis: Redis) -> None:
    store = JobStore(redis, job_ttl_s=600)
    tenant, other = f"t{uuid.uuid4().hex[:8]}", f"t{uuid.uuid4().hex[:8]}"
    for owner, feature, status in (
        (tenant, "f1", JobStatus.SUCCEEDED),
        (tenant, "f2", JobStatus.FAILED),
        (other, "f1", JobStatus.SUCCEEDED),
    ):
        job = await running_job(store, owner, feature)
        ok = status is JobStatus.SUCCEEDED
        entry = ledger.entry(
            job, status, attempts=ATTEMPTS if ok else ATTEMPTS[:2], usage=USAGE if ok else None,
            target=("b", "m2") if ok else None, error_code=None if ok else "provider_timeout",
        )  # fmt: skip
        await store.transition(job.id, status, ledger=entry)
    today = date.fromisoformat(day_of(time.time()))
    rows = {
        r["key"]: r
        for r in await usage.usage(redis, group_by="feature", since=today, until=today, tenant=tenant)
    }
    assert set(rows) == {"f1", "f2"}
    f1, f2 = rows["f1"], rows["f2"]
    assert (f1["jobs"], f1["succeeded"], f1["input_tokens"], f1["cost_usd"]) == (1, 1, 100, 0.25)
    assert (f1["retry_rate"], f1["fallback_rate"], f1["error_rate"]) == (1.0, 1.0, 0.0)
    assert f1["latency_p50_ms"] is not None and f1["latency_p95_ms"] is not None
    assert (f2["jobs"], f2["failed"], f2["error_rate"], f2["fallback_rate"]) == (1, 1, 1.0, 0.0)
    by_model = await usage.usage(redis, group_by="model", since=today, until=today, tenant=tenant)
    assert {r["key"]: r["jobs"] for r in by_model} == {"b:m2": 1, "a:m1": 1}
    by_tenant = await usage.usage(redis, group_by="tenant", since=today, until=today, tenant=None)
    assert {tenant, other} <= {r["key"] for r in by_tenant}
    by_day = await usage.usage(redis, group_by="day", since=today, until=today, tenant=tenant)
    assert [(r["key"], r["jobs"]) for r in by_day] == [(today.isoformat(), 2)]


async def test_unknown_costs_are_flagged_not_zero(redis: Redis) -> None:
    store = JobStore(redis, job_ttl_s=600)
    tenant = f"t{uuid.uuid4().hex[:8]}"
    job = await running_job(store, tenant)
    unpriced = {**USAGE, "cost_usd": None}
    entry = ledger.entry(job, JobStatus.SUCCEEDED, attempts=ATTEMPTS[2:], usage=unpriced, target=("b", "m2"))
    assert entry.record["cost_known"] is False
    await store.transition(job.id, JobStatus.SUCCEEDED, ledger=entry)
    today = date.fromisoformat(day_of(time.time()))
    [row] = await usage.usage(redis, group_by="feature", since=today, until=today, tenant=tenant)
    assert row["cost_unknown_jobs"] == 1 and row["cost_usd"] == 0


async def test_a_day_exports_to_jsonl_with_one_line_per_job_and_attempt(redis: Redis, tmp_path: Path) -> None:
    day = "2001-02-03"  # a day of its own
    await redis.delete(Keys.ledger(day))
    for i in range(5):
        record = {"record": "job", "id": f"job_{i}", "attempt_records": ATTEMPTS}
        await redis.xadd(Keys.ledger(day), {"r": orjson.dumps(record)})
    blobs = LocalStore(tmp_path, "http://127.0.0.1:1", b"0123456789abcdef")
    stored = await usage.export_day(redis, blobs, day)
    lines = [orjson.loads(line) for line in (tmp_path / "ledger" / f"{day}.jsonl").read_bytes().splitlines()]
    assert stored.key == f"ledger/{day}.jsonl" and len(lines) == 5 * 4
    assert [line["record"] for line in lines[:4]] == ["job", "attempt", "attempt", "attempt"]
    assert lines[1]["job_id"] == "job_0" and lines[3]["provider"] == "b"
    assert "attempt_records" not in lines[0]
    assert await redis.get(Keys.ledger_exported(day)) == stored.sha256.encode()


async def test_an_estimate_that_counted_nothing_is_an_unknown_cost(redis: Redis) -> None:
    store = JobStore(redis, job_ttl_s=600)
    tenant = f"t{uuid.uuid4().hex[:8]}"
    job = await running_job(store, tenant)
    unknown = {"units": 0.0, "estimated": True, "cost_usd": None}
    entry = ledger.entry(job, JobStatus.SUCCEEDED, attempts=ATTEMPTS[2:], usage=unknown, target=("b", "m2"))
    assert entry.record["cost_known"] is False
    await store.transition(job.id, JobStatus.SUCCEEDED, ledger=entry)
    today = date.fromisoformat(day_of(time.time()))
    [row] = await usage.usage(redis, group_by="feature", since=today, until=today, tenant=tenant)
    assert (row["cost_unknown_jobs"], row["cost_known"]) == (1, False)
