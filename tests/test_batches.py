"""Batch records on real Redis: the status machine, counts kept exactly once, line maps and listing."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from redis.asyncio import Redis

from aijobs.batches import ALLOWED_FROM, TERMINAL, Batch, BatchStatus, BatchStore, new_batch_id
from aijobs.jobs import JobStatus


def batch(tenant: str, **fields: object) -> Batch:
    now = time.time()
    record = Batch(
        new_batch_id(), tenant, "/v1/chat/completions", "file_x", "24h", "background", now, now + 86400
    )
    for name, value in fields.items():
        setattr(record, name, value)
    return record


@pytest.fixture
def store(redis: Redis) -> BatchStore:
    return BatchStore(redis, ttl_s=600)


async def test_a_record_round_trips_and_reads_as_openais_batch(store: BatchStore) -> None:
    made = batch("t1", metadata={"job": "nightly"}, total=3)
    await store.create(made)
    found = await store.get(made.id)
    assert found == made
    assert await store.get(made.id, tenant="someone-else") is None
    assert await store.redis.ttl(f"aijobs:batch:{made.id}") > 86_400  # its whole window, then some
    view = made.view()
    assert (
        view["object"] == "batch"
        and view["status"] == "validating"
        and view["metadata"] == {"job": "nightly"}
    )
    assert view["request_counts"] == {"total": 3, "completed": 0, "failed": 0}
    assert view["completed_at"] is None and view["errors"] is None


async def test_the_status_machine_refuses_moves_it_does_not_allow(store: BatchStore) -> None:
    made = batch("t1")
    await store.create(made)
    assert await store.move(made.id, BatchStatus.COMPLETED) is BatchStatus.VALIDATING  # refused
    assert await store.move(made.id, BatchStatus.IN_PROGRESS, in_progress_at=time.time()) is None
    assert await store.move(made.id, BatchStatus.CANCELLING) is None
    assert await store.move(made.id, BatchStatus.IN_PROGRESS) is BatchStatus.CANCELLING
    assert await store.move(made.id, BatchStatus.FINALIZING, ending="cancelled") is None
    assert await store.move(made.id, BatchStatus.CANCELLED, ended_at=time.time()) is None
    found = await store.get(made.id)
    assert found is not None and found.status is BatchStatus.CANCELLED and found.ending == "cancelled"
    assert found.view()["cancelled_at"] is not None
    assert not any(TERMINAL & sources for sources in ALLOWED_FROM.values())  # nothing leaves an end
    for status in ALLOWED_FROM:
        assert await store.move(made.id, status) is BatchStatus.CANCELLED
    with pytest.raises(LookupError):
        await store.move("batch_missing", BatchStatus.IN_PROGRESS)


async def test_two_drivers_cannot_both_finish_a_batch(store: BatchStore) -> None:
    made = batch("t1", status=BatchStatus.FINALIZING)
    await store.create(made)
    results = await asyncio.gather(*(store.move(made.id, BatchStatus.COMPLETED) for _ in range(5)))
    assert results.count(None) == 1


async def test_finished_lines_are_counted_once_however_often_settled(store: BatchStore) -> None:
    made = batch("t1")
    await store.create(made)
    assert await store.advance(made, 0, {0: "job_a", 1: "job_b", 2: "job_c"}, offset=300)
    assert not await store.advance(made, 0, {0: "job_a"}, offset=100)  # a tick delivered twice
    finished = {"job_a": JobStatus.SUCCEEDED, "job_b": JobStatus.FAILED}
    assert await store.settle(made.id, finished) == 2
    assert await store.settle(made.id, finished) == 0  # retried: nothing counted twice
    assert not await store.advance(made, 0, {0: "job_a", 1: "job_b"}, offset=200)  # a stale tick
    assert await store.settle(made.id, finished) == 0  # a settled line is never opened again
    found = await store.get(made.id)
    assert found is not None and (found.completed, found.failed) == (1, 1)
    assert (found.expanded, found.offset) == (3, 300)
    assert await store.open_jobs(made.id) == ["job_c"]
    assert await store.line_jobs(made.id, 1, 3) == ["job_b", "job_c", None]


async def test_listing_pages_newest_first(store: BatchStore) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    made = []
    for i in range(5):
        record = batch(tenant)
        record.created_at += i  # distinct, increasing
        await store.create(record)
        made.append(record.id)
    first, more = await store.page(tenant, 2)
    assert [b.id for b in first] == made[:-3:-1] and more
    rest, more = await store.page(tenant, 10, after=first[-1].id)
    assert [b.id for b in rest] == made[-3::-1] and not more
    assert await store.page(tenant, 10, after="batch_unknown") == ([], False)


async def test_only_one_run_of_a_tick_schedules_the_next(store: BatchStore) -> None:
    made = batch("t1")
    await store.create(made)
    claims = await asyncio.gather(*(store.next_tick(made.id, 0) for _ in range(3)))  # delivered 3 times
    assert claims.count(True) == 1
    assert not await store.next_tick(made.id, 0)
    assert await store.count_failure(made.id) == 1
    assert await store.next_tick(made.id, 1)  # the next tick, which also clears the failure count
    found = await store.get(made.id)
    assert found is not None and (found.tick_seq, found.tick_failures) == (2, 0)
