"""Job records in a real Redis: compare-and-set transitions, idempotency, listing."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.asyncio import Redis

from aijobs.jobs import JobStatus, is_job_id, new_job_id
from aijobs.keys import Keys
from aijobs.store import IdempotencyConflict, JobStore


def new_tenant() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


async def make(store: JobStore, tenant: str, **kwargs: object) -> str:
    created = await store.create(
        tenant=tenant, type="chat", feature="support-chat", lane="interactive",
        input={"messages": []}, metadata={}, **kwargs,  # type: ignore[arg-type]
    )  # fmt: skip
    return created.job.id


def test_ids_are_time_ordered_and_recognisable() -> None:
    ids = [new_job_id(ms) for ms in (1, 2, 1_700_000_000_000, 1_700_000_000_001)]
    assert ids == sorted(ids)
    assert all(is_job_id(i) for i in ids)
    assert not is_job_id("job_123") and not is_job_id("job_" + "I" * 26)


async def test_transitions_are_compare_and_set(redis: Redis) -> None:
    store = JobStore(redis, job_ttl_s=600)
    job_id = await make(store, new_tenant())
    assert not (await store.transition(job_id, JobStatus.SUCCEEDED)).ok  # queued → succeeded is not allowed
    claim = await store.transition(job_id, JobStatus.RUNNING, want_record=True)
    assert claim.ok and claim.previous is JobStatus.QUEUED
    assert claim.job is not None and claim.job.runs == 1 and claim.job.started_at is not None
    assert await redis.zscore(Keys.pending("interactive"), job_id) is None
    done = await store.transition(job_id, JobStatus.SUCCEEDED, fields={"output": {"x": [1, 2]}})
    assert done.ok
    job = await store.get(job_id)
    assert job is not None and job.status is JobStatus.SUCCEEDED and job.output == {"x": [1, 2]}
    assert 0 < await redis.ttl(Keys.job(job_id)) <= 600
    late_cancel = await store.transition(job_id, JobStatus.CANCELED)
    assert not late_cancel.ok and late_cancel.previous is JobStatus.SUCCEEDED
    missing = await store.transition(new_job_id(), JobStatus.RUNNING)
    assert not missing.ok and missing.previous is None


async def test_concurrent_claims_have_exactly_one_winner(redis: Redis) -> None:
    store = JobStore(redis, job_ttl_s=600)
    job_id = await make(store, new_tenant())
    results = await asyncio.gather(*(store.transition(job_id, JobStatus.RUNNING) for _ in range(50)))
    assert sum(r.ok for r in results) == 1


async def test_idempotency_and_tenant_scoping(redis: Redis) -> None:
    store = JobStore(redis, job_ttl_s=600)
    tenant = new_tenant()
    first = await make(store, tenant, idempotency=("k", "body-1"))
    assert await make(store, tenant, idempotency=("k", "body-1")) == first
    with pytest.raises(IdempotencyConflict) as conflict:
        await make(store, tenant, idempotency=("k", "body-2"))
    assert conflict.value.job_id == first
    assert await make(store, new_tenant(), idempotency=("k", "body-2")) != first  # keys are per tenant
    assert await store.get(first, tenant) is not None
    assert await store.get(first, "someone-else") is None


async def test_list_skips_expired_records_and_filters(redis: Redis) -> None:
    store = JobStore(redis, job_ttl_s=600)
    tenant = new_tenant()
    ids = [await make(store, tenant) for _ in range(7)]
    await redis.delete(Keys.job(ids[3]))  # as if it expired
    await store.transition(ids[5], JobStatus.CANCELED)
    jobs, cursor = await store.page(tenant, limit=10)
    assert [j.id for j in jobs] == [i for i in reversed(ids) if i != ids[3]] and cursor is None
    assert await redis.zscore(Keys.tenant_jobs(tenant), ids[3]) is None
    canceled, _ = await store.page(tenant, limit=10, filters={"status": "canceled"})
    assert [j.id for j in canceled] == [ids[5]]


async def test_pending_lists_a_lanes_queued_jobs_by_age(redis: Redis) -> None:
    store = JobStore(redis, job_ttl_s=600)
    job_id = await make(store, new_tenant())
    assert job_id in await store.pending("interactive", older_than_s=0)
    assert job_id not in await store.pending("batch", older_than_s=0)
    assert job_id not in await store.pending("interactive", older_than_s=60)
    await store.transition(job_id, JobStatus.RUNNING)
    assert job_id not in await store.pending("interactive", older_than_s=0)


def test_ids_from_one_generator_sort_in_creation_order_within_a_millisecond() -> None:
    from aijobs.jobs import JobIds

    ids = JobIds()
    made = [ids.new(1_700_000_000_000) for _ in range(1000)]
    assert made == sorted(made)
    assert len(set(made)) == 1000
    assert ids.new(1_700_000_000_001) > made[-1]


async def test_create_enqueues_in_the_same_step(redis: Redis) -> None:
    import orjson

    from aijobs.queue import delivery, queue_name

    store = JobStore(redis, job_ttl_s=600)
    job_id = await make(store, new_tenant(), deliver=delivery)
    assert await redis.zscore(queue_name("interactive"), job_id) is not None
    payload = orjson.loads(await redis.get(f"arq:job:{job_id}"))
    assert (payload["f"], payload["a"]) == ("run_job", [job_id])
    assert 86_000 < await redis.pttl(f"arq:job:{job_id}") / 1000 <= 86_400
    await redis.zrem(queue_name("interactive"), job_id)


async def test_summary_pages_leave_input_and_output_unread(redis: Redis) -> None:
    store = JobStore(redis, job_ttl_s=600)
    tenant = new_tenant()
    job_id = await make(store, tenant)
    await store.transition(job_id, JobStatus.RUNNING)
    await store.transition(
        job_id, JobStatus.SUCCEEDED, fields={"output": {"big": "x" * 1000}, "usage": {"units": 1}}
    )
    (summary,), _ = await store.page(tenant, limit=5, summaries=True)
    (full,), _ = await store.page(tenant, limit=5)
    assert (summary.input, summary.output) == ({}, None)
    assert full.output == {"big": "x" * 1000}
    assert (summary.status, summary.usage, summary.finished_at) == (full.status, full.usage, full.finished_at)
